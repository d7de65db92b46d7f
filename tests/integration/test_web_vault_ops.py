"""The web vault as a complete client, in headless Chromium against a real gateway, LND and
kubo, with `bitcache sync` on a second device checking each change on disk:

* an account made without a vault creates it in the page (master key made and wrapped
  there, at the CLI's cost); the CLI unlocks it with the same password and syncs it;
* uploading over a name writes a new version (the tenant's keep_versions kept);
* restoring an older version, delete into the trash and restore, rename and move of a file
  and of a folder, each done in the page, are applied to the synced folder by one pass;
* a write from the page that loses the compare-and-set to another device reads its change,
  confirms its chunks again (a garbage collection may have run meanwhile) and writes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from client import login
from client.api import BitcacheClient
from client.config import ClientConfig
from client.sync import vault as vaults
from gateway.config import TenantSettings
from gateway.http.handlers.pages import STATIC_DIR
from gateway.server import serve
from regtest.network import Network
from storage.vault import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    MIN_MEMLIMIT,
    MIN_OPSLIMIT,
    new_object_id,
)
from storage.vault_tree import Entry
from tests.conftest import gateway_config
from tests.integration.test_web import ARGS, CHROMIUM, DESKTOP

playwright = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.integration

USERNAME = "wendy"
PASSWORD = "a vault made in the browser \u2013 Köln"
KEEP = 3
MIB = 1 << 20


async def bitcache(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder`` but the sync's own state."""
    out: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if rel.split("/")[0] == ".bitcache-sync":
            continue
        out[rel] = p.read_bytes() if p.is_file() else None
    return out


async def test_a_vault_made_and_changed_in_the_page_is_what_bitcache_sync_writes_to_disk(
    network: Network, tmp_path: Path
) -> None:
    if not (STATIC_DIR / "vault.js").is_file():
        pytest.fail("the web app is not built: `make web` builds it into gateway/static")
    config = gateway_config(
        network, tmp_path / "gw", tenants=[TenantSettings(vault_keep_versions=KEEP)]
    )
    folder = tmp_path / "laptop"
    folder.mkdir()
    cfg_path = tmp_path / "laptop.json"
    local = tmp_path / "local"
    versions = [os.urandom(MIB + 1000 + i) for i in range(3)]
    other = b"the other file\n"

    async def sync() -> str:
        code, out, err = await bitcache("sync", str(folder), "--config", str(cfg_path), "-q")
        assert code == 0, err
        assert "conflict" not in out, out
        return out

    async with serve(config) as url, playwright.async_playwright() as p:
        # An account that logged in somewhere first: no vault yet.
        async with BitcacheClient(ClientConfig(gateway_url=url)) as client:
            account = await login.create(client, USERNAME, PASSWORD)
        cfg = ClientConfig(gateway_url=url, api_key=account["api_key"])
        cfg_path.write_text(cfg.model_dump_json())
        async with BitcacheClient(cfg) as client:
            assert (await client.call("GET", "/v1/vault"))["keys"] == []

        browser: Any = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport=DESKTOP, accept_downloads=True)
        sent: list[bytes] = []
        page.on("request", lambda r: sent.append(r.post_data_buffer or b""))

        async def settled() -> str:
            await page.wait_for_function(
                "() => ['ready', 'error'].includes(document.getElementById('app').dataset.state)",
                timeout=120_000,
            )
            status: str = await page.inner_text("#status")
            assert await page.get_attribute("#app", "data-state") == "ready", status
            return status

        async def upload(*files: Path) -> str:
            await page.set_input_files("#vault-upload-input", [str(f) for f in files])
            await page.click("#vault-upload-button")
            return await settled()

        # 1. The page creates the vault.
        await page.goto(url + "/vault")
        await page.fill("#vault-username", USERNAME)
        await page.fill("#vault-password", PASSWORD)
        await page.click("#vault-unlock")
        await page.wait_for_selector("#vault-create", timeout=90_000)
        assert await page.get_attribute("#app", "data-state") == "no-vault"
        await page.click("#vault-create")
        assert "created" in await settled()
        async with BitcacheClient(cfg) as client:
            info = await client.call("GET", "/v1/vault")
            wrapped = (await client.call("GET", "/v1/vault/keys/password"))["wrapped"]
        assert info["keys"] == ["password"]
        assert wrapped["account"] == account["account_id"]
        assert (wrapped["kdf"]["opslimit"], wrapped["kdf"]["memlimit"]) == (
            DEFAULT_OPSLIMIT,
            DEFAULT_MEMLIMIT,
        )
        # The master key and the password never left the page in the clear.
        assert not any(PASSWORD.encode() in body for body in sent)

        # A folder and two files, made in the page.
        await page.fill("#vault-new-folder-name", "Docs")
        await page.click("#vault-new-folder")
        await settled()
        await page.click('a[data-path="Docs"]')
        local.mkdir()
        (local / "a.txt").write_bytes(versions[0])
        (local / "b.txt").write_bytes(other)
        await upload(local / "a.txt", local / "b.txt")
        await page.wait_for_selector('tr[data-path="Docs/b.txt"]')

        # 2. The CLI unlocks the browser's vault with the same password, and syncs it.
        code, out, err = await bitcache(
            "vault", "unlock", "--password-stdin", "--config", str(cfg_path),
            stdin=PASSWORD.encode() + b"\n",
        )  # fmt: skip
        assert code == 0, err
        await sync()
        assert tree(folder) == {"Docs": None, "Docs/a.txt": versions[0], "Docs/b.txt": other}

        # 3. Upload over a name: a new version of the same object, not a refusal.
        for content in versions[1:]:
            (local / "a.txt").write_bytes(content)
            assert "new version" in await upload(local / "a.txt")
        assert "unchanged" in await upload(local / "a.txt")  # the same bytes again
        await sync()
        assert (folder / "Docs" / "a.txt").read_bytes() == versions[2]
        code, out, err = await bitcache(
            "versions", str(folder / "Docs" / "a.txt"), "--config", str(cfg_path)
        )
        assert code == 0, err
        assert [line.split(":")[0].strip() for line in out.splitlines()[1:]] == [
            "version 3",
            "version 2",
            "version 1",
        ], out

        # 4. Restore version 1: a fourth version, the oldest dropped (keep_versions = 3).
        await page.click('button[data-versions="Docs/a.txt"]')
        await page.wait_for_selector('#vault-versions tr[data-version="1"]')
        async with page.expect_download(timeout=60_000) as saving:
            await page.click('button[data-download-version="2"]')
        got = await (await saving.value).path()
        assert Path(got).read_bytes() == versions[1]
        await page.click('button[data-restore-version="1"]')
        await settled()
        await page.wait_for_selector('#vault-versions tr[data-version="4"]')
        shown = await page.eval_on_selector_all(
            "#vault-versions tr[data-version]", "rows => rows.map(r => r.dataset.version)"
        )
        assert shown == ["4", "3", "2"]
        await sync()
        assert (folder / "Docs" / "a.txt").read_bytes() == versions[0]

        # 5. Delete into the trash; the device removes the file; restore it from the trash.
        await page.click('button[data-delete="Docs/b.txt"]')
        await settled()
        assert await page.locator('tr[data-path="Docs/b.txt"]').count() == 0
        await sync()
        assert not (folder / "Docs" / "b.txt").exists()
        await page.click("#vault-trash-button")
        trashed = page.locator('#vault-trash tr[data-path="Docs/b.txt"]')
        await trashed.wait_for()
        await trashed.locator("button[data-restore]").click()
        await settled()
        assert await page.locator('#vault-trash tr[data-path="Docs/b.txt"]').count() == 0
        await page.wait_for_selector('tr[data-path="Docs/b.txt"]')
        await sync()
        assert (folder / "Docs" / "b.txt").read_bytes() == other

        # 6. Move a file into a folder that does not exist yet.
        await page.click('button[data-rename="Docs/b.txt"]')
        await page.fill("#vault-rename-input", "Archive/b2.txt")
        await page.click("#vault-rename-apply")
        await settled()
        out = await sync()
        assert "uploaded 0 B" in out, out  # a move sends no bytes
        assert tree(folder) == {
            "Archive": None,
            "Archive/b2.txt": other,
            "Docs": None,
            "Docs/a.txt": versions[0],
        }

        # 7. Rename a folder: its file follows (same object), the old folder goes away.
        await page.click('a[data-dir=""]')
        await page.click('button[data-rename="Docs"]')
        await page.fill("#vault-rename-input", "Papers")
        await page.click("#vault-rename-apply")
        await settled()
        await sync()
        expected = {
            "Archive": None,
            "Archive/b2.txt": other,
            "Papers": None,
            "Papers/a.txt": versions[0],
        }
        assert tree(folder) == expected
        # A second pass changes nothing, and does not bring the old folder back.
        out = await sync()
        assert "0 vault objects written" in out, out
        assert tree(folder) == expected
        listed = await page.eval_on_selector_all(
            "#vault-list tr[data-path]", "rows => rows.map(r => r.dataset.path)"
        )
        assert listed == ["Archive", "Papers"], listed
        # The trash keeps the old folder (the page leaves emptying it to the CLI).
        await page.click("#vault-trash-button")
        await page.wait_for_selector("#vault-trash-note")
        note = await page.inner_text("#vault-trash-note")
        assert "bitcache" in note
        assert await page.locator('#vault-trash tr[data-path="Docs"]').count() == 1
        text = await page.inner_text("#app")
        assert "undefined" not in text and "NaN" not in text
        await browser.close()


async def test_an_upload_that_loses_the_race_confirms_its_chunks_and_keeps_both_changes(
    network: Network, tmp_path: Path
) -> None:
    if not (STATIC_DIR / "vault.js").is_file():
        pytest.fail("the web app is not built: `make web` builds it into gateway/static")
    config = gateway_config(network, tmp_path / "gw")
    data = os.urandom(2 * MIB + 4321)  # three chunks of the page's 1 MiB cut
    upload = tmp_path / "race.bin"
    upload.write_bytes(data)
    async with serve(config) as url, playwright.async_playwright() as p:
        async with BitcacheClient(ClientConfig(gateway_url=url)) as client:
            account = await login.create(client, "xavier", PASSWORD)
        cfg = ClientConfig(gateway_url=url, api_key=account["api_key"])
        keys = vaults.key_file(tmp_path / "laptop.json")
        async with BitcacheClient(cfg) as client:
            await vaults.init_vault(
                client, keys, PASSWORD, opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT
            )

        browser: Any = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport=DESKTOP)
        await page.goto(url + "/vault")
        await page.fill("#vault-username", "xavier")
        await page.fill("#vault-password", PASSWORD)
        await page.click("#vault-unlock")
        await page.wait_for_selector("#vault-upload-input", timeout=90_000)

        creates: list[str] = []
        page.on(
            "request",
            lambda r: (
                creates.append(r.url)
                if r.method == "POST" and r.url.endswith("/v1/files")
                else None
            ),
        )
        raced: list[int] = []

        async def laptop_first(route: Any) -> None:
            """The page's first object write waits while another device writes first."""
            if not raced:
                raced.append(len(creates))
                async with BitcacheClient(cfg) as client:
                    vault = await vaults.Vault.open(client, keys)
                    counter, _ = await vault.changes(0)
                    folder = Entry(kind="dir", path="From laptop", counter=0)
                    assert await vault.write(counter, {new_object_id(): folder}) is not None
            await route.continue_()

        await page.route("**/v1/vault/objects", laptop_first)
        await page.set_input_files("#vault-upload-input", str(upload))
        await page.click("#vault-upload-button")
        await page.wait_for_function(
            "() => ['ready', 'error'].includes(document.getElementById('app').dataset.state)",
            timeout=120_000,
        )
        status = await page.inner_text("#status")
        assert await page.get_attribute("#app", "data-state") == "ready", status
        assert "Uploaded" in status, status
        # Three chunk files stored, then confirmed once more after the lost race.
        assert raced == [3]
        assert len(creates) == 6, creates
        await page.wait_for_selector('tr[data-path="From laptop"]')
        await page.wait_for_selector('tr[data-path="race.bin"]')
        await browser.close()

        # Both changes are in the vault, and the page's version reads back byte for byte.
        async with BitcacheClient(cfg) as client:
            vault = await vaults.Vault.open(client, keys)
            _, entries = await vault.changes(0)
            live = {e.path: e for e in entries.values() if e is not None and e.deleted is None}
            assert sorted(live) == ["From laptop", "race.bin"]
            version = live["race.bin"].current
            assert version is not None and version.n == 1 and version.device == "web"
            got = b"".join([await vault.fetch_chunk(ref) for ref in version.refs()])
        assert got == data
