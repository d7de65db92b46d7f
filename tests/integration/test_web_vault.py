"""The web vault in headless Chromium against a real gateway, LND and kubo: log in, unlock the
vault with the password (argon2id in the page), see a file synced from the CLI, download it,
upload a file into a folder (encrypted in the page, written with the vault's compare-and-set),
and `bitcache sync` on the CLI then has it, byte for byte. Then share that folder from the
page and open the folder link in another browser, paying per chunk."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from client import login
from client.api import BitcacheClient
from client.config import ClientConfig
from client.folder import download_folder, upload_manifest
from client.sync import vault as vaults
from client.sync.engine import SyncEngine
from gateway.http.handlers.pages import STATIC_DIR
from gateway.server import serve
from regtest.network import Network
from sandbox.run import sandbox_client_config
from storage.vault import MIN_MEMLIMIT, MIN_OPSLIMIT, canonical_json, pad
from tests.conftest import gateway_config
from tests.integration.test_web import ARGS, CHROMIUM, DESKTOP

playwright = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.integration

USERNAME = "vera"
PASSWORD = "vault in the browser \u2013 Zürich"
PRICE_MSAT = 2_000
MIB = 1 << 20


@pytest.fixture(scope="module")
async def gw(network: Network, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    config = gateway_config(
        network, tmp_path_factory.mktemp("web-vault"), default_price_msat=PRICE_MSAT
    )
    async with serve(config) as url:
        yield url


async def bitcache(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def saved(download: Any) -> bytes:
    path = await download.path()
    assert path is not None
    return Path(path).read_bytes()


async def test_log_in_browse_download_upload_then_cli_sync_has_it(
    network: Network, gw: str, tmp_path: Path
) -> None:
    if not (STATIC_DIR / "vault.js").is_file():
        pytest.fail("the web app is not built: `make web` builds it into gateway/static")
    url = gw
    # The CLI: an account with a username, its vault, and a synced folder.
    async with BitcacheClient(ClientConfig(gateway_url=url)) as client:
        account = await login.create(client, USERNAME, PASSWORD)
    cfg = ClientConfig(gateway_url=url, api_key=account["api_key"])
    cfg_path = tmp_path / "laptop.json"
    cfg_path.write_text(cfg.model_dump_json())
    keys = vaults.key_file(cfg_path)
    folder = tmp_path / "laptop"
    (folder / "Docs").mkdir(parents=True)
    report = os.urandom(MIB + 333)
    (folder / "Docs" / "report.txt").write_bytes(report)
    (folder / "hello.txt").write_text("hello from the CLI\n")
    async with BitcacheClient(cfg) as client:
        await vaults.init_vault(
            client, keys, PASSWORD, opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT
        )
        engine = SyncEngine(await vaults.Vault.open(client, keys), folder, "laptop")
        try:
            await engine.run_once()
        finally:
            engine.close()

    from_web = os.urandom(2 * MIB + 12_345)
    upload = tmp_path / "from web \u00e9.bin"
    upload.write_bytes(from_web)

    async with playwright.async_playwright() as p:
        browser: Any = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport=DESKTOP, accept_downloads=True)
        page = await context.new_page()
        await page.goto(url + "/vault")
        await page.fill("#vault-username", USERNAME)
        await page.fill("#vault-password", "not the password")
        await page.click("#vault-unlock")
        await page.wait_for_selector("text=Wrong username or password.", timeout=90_000)
        await page.fill("#vault-password", PASSWORD)
        await page.click("#vault-unlock")
        # The tree, decrypted in the page: the folder and the file the CLI synced.
        await page.wait_for_selector('tr[data-kind="dir"][data-path="Docs"]', timeout=120_000)
        hello = page.locator('tr[data-path="hello.txt"]')
        cells = await hello.locator("td").all_inner_texts()
        assert cells[0] == "hello.txt" and cells[1] == "19 B", cells
        assert str(time.gmtime().tm_year) in cells[2], cells  # the modification time
        await page.click('a[data-path="Docs"]')
        row = page.locator('tr[data-path="Docs/report.txt"]')
        await row.wait_for(timeout=10_000)
        assert "1.05 MB" in await row.inner_text()

        # Download: the owner's traffic is free, decrypted and MAC-checked in the page.
        async with page.expect_download(timeout=60_000) as saving:
            await page.click('button[data-download="Docs/report.txt"]')
        assert await saved(await saving.value) == report

        # Upload into this folder, encrypted in the page.
        await page.set_input_files("#vault-upload-input", str(upload))
        await page.click("#vault-upload-button")
        web_path = f"Docs/{upload.name}"
        await page.wait_for_selector(f'tr[data-path="{web_path}"]', timeout=120_000)
        await page.wait_for_function(
            "() => document.getElementById('app').dataset.state === 'ready'", timeout=30_000
        )
        status = await page.inner_text("#status")
        assert "Uploaded" in status, status

        # Share the folder from the page: a folder link.
        await page.click('a[data-dir=""]')
        await page.click('button[data-share="Docs"]')
        await page.wait_for_selector("#vault-share-link", timeout=120_000)
        folder_link = await page.input_value("#vault-share-link")
        assert folder_link.startswith(f"{url}/d/") and "#v1." in folder_link
        text = await page.inner_text("#app")
        assert "undefined" not in text and "NaN" not in text

        # A stranger opens the folder link in a browser and pays per chunk (WebLN).
        payer = network.node("payer").client
        paid: list[str] = []

        async def pay(invoice: str) -> str:
            paid.append(invoice)
            return (await payer.pay_invoice(invoice, fee_limit_msat=1_000)).preimage.hex()

        stranger = await browser.new_context(viewport=DESKTOP, accept_downloads=True)
        await stranger.expose_function("__regtestPay", pay)
        await stranger.add_init_script(
            "window.webln = { enable: async () => ({}),"
            " sendPayment: async (invoice) => ({ preimage: await window.__regtestPay(invoice) }) };"
        )
        spage = await stranger.new_page()
        await spage.goto(folder_link)
        file_row = spage.locator(f'tr[data-path="{upload.name}"]')
        await file_row.wait_for(timeout=60_000)
        assert await spage.locator('tr[data-path="report.txt"]').count() == 1
        async with spage.expect_download(timeout=120_000) as saving:
            await file_row.locator("button").click()
        assert await saved(await saving.value) == from_web
        assert len(paid) == 1
        assert (await payer.decode_invoice(paid[0])).amount_msat == PRICE_MSAT * 3

        # "Download all": every file, each paid for chunk by chunk.
        downloads: list[Any] = []
        spage.on("download", lambda d: downloads.append(d))
        await spage.click("#download-all")
        await spage.wait_for_function(
            "() => ['done', 'error'].includes(document.getElementById('app').dataset.state)",
            timeout=120_000,
        )
        assert await spage.get_attribute("#app", "data-state") == "done"
        got = {d.suggested_filename: await saved(d) for d in downloads}
        assert got == {"report.txt": report, upload.name: from_web}
        amounts = sorted([(await payer.decode_invoice(i)).amount_msat for i in paid[1:]])
        assert amounts == [PRICE_MSAT * 2, PRICE_MSAT * 3]  # report: 1 MiB + 333 B
        await browser.close()

    # `bitcache sync` on the CLI device now has the file uploaded from the page.
    code, out, err = await bitcache("sync", str(folder), "--config", str(cfg_path), "-q")
    assert code == 0, err
    assert (folder / "Docs" / upload.name).read_bytes() == from_web
    assert "conflict" not in out
    # And a second pass changes nothing (the page's chunks are not re-read or re-sent).
    code, out, err = await bitcache("sync", str(folder), "--config", str(cfg_path), "-q")
    assert code == 0, err
    assert out.startswith("uploaded 0 B in 0 chunks"), out

    # The folder link shared from the page opens with the Python client too.
    stranger_cfg = sandbox_client_config(network, url)
    async with BitcacheClient(stranger_cfg) as client:
        result = await download_folder(client, folder_link, out=tmp_path / "got", progress=False)
    assert result.files == 2
    assert (tmp_path / "got" / "report.txt").read_bytes() == report
    assert (tmp_path / "got" / upload.name).read_bytes() == from_web


async def test_a_hostile_folder_link_offers_nothing_in_the_browser(gw: str, tmp_path: Path) -> None:
    url = gw
    async with BitcacheClient(ClientConfig(gateway_url=url)) as client:
        account = await login.create(client, "mallory", PASSWORD)
    cfg = ClientConfig(gateway_url=url, api_key=account["api_key"])
    ok = {"path": "fine.txt", "size": 1, "file_id": "a" * 26, "key": "A" * 43}
    body = {"version": 1, "name": "evil", "files": [ok, ok | {"path": "../../.bashrc"}]}
    async with BitcacheClient(cfg) as client:
        link = await upload_manifest(client, "evil", pad(canonical_json(body), 1024))
    async with playwright.async_playwright() as p:
        browser: Any = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport=DESKTOP)
        await page.goto(link.to_url())
        await page.wait_for_selector("#error", timeout=60_000)
        error = await page.inner_text("#error")
        assert "refused path" in error and '"../../.bashrc"' in error, error
        assert await page.locator("tr[data-path]").count() == 0
        assert await page.get_attribute("#app", "data-state") == "error"
        await browser.close()
