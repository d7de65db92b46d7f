"""The web app in Debian's headless Chromium against a real gateway, LND and kubo:
upload in one page, open the link in another, pay (through an injected WebLN provider
that pays with the regtest payer node, or by the test paying the shown invoice as a
phone would), and compare the saved file byte for byte. Screenshots of each page at
desktop and phone widths go to $BITCACHE_SCREENSHOTS (default: a temporary folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.http.handlers.pages import STATIC_DIR
from regtest.network import Network
from tests.conftest import gateway_config
from tests.gateways import serve_gateway
from tests.support import create_account

try:
    import playwright.async_api as playwright
except ImportError:
    # In CI the browser tests must run: a missing Playwright is an error there, not a skip.
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        raise
    pytest.skip("Playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
async def web_gateway(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    config = gateway_config(network, tmp_path_factory.mktemp("web"), default_price_msat=3_000)
    async with serve_gateway(config) as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make browser` installs Debian's chromium")
    if not (STATIC_DIR / "download.js").is_file():
        pytest.fail("the web app is not built: `make web` builds it into gateway/static")
    async with playwright.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    path = Path(os.environ.get("BITCACHE_SCREENSHOTS") or tempfile.mkdtemp(prefix="shots-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


async def shoot(page: Any, folder: Path, name: str) -> None:
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)
        await page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)


async def upload_in_page(browser: Any, url: str, source: Path, shots: Path | None) -> str:
    async with aiohttp.ClientSession() as session:
        _, api_key = await create_account(session, url)
    page = await browser.new_page(viewport=DESKTOP)
    await page.goto(url + "/")
    await page.fill("#api-key", api_key)
    await page.set_input_files("#file-input", str(source))
    if shots:
        await shoot(page, shots, "upload-chosen")
    await page.click("#upload-button")
    link_box = page.locator("#share-link")
    await link_box.wait_for(state="visible", timeout=60_000)
    await page.wait_for_function(
        "() => (document.querySelector('#share-link').value"
        " || document.querySelector('#share-link').textContent || '').includes('#')",
        timeout=60_000,
    )
    link = await page.evaluate(
        "() => { const e = document.querySelector('#share-link');"
        " return (e.value || e.textContent).trim(); }"
    )
    if shots:
        await shoot(page, shots, "upload-done")
    await page.close()
    assert link.startswith(f"{url}/f/") and "#" in link
    return str(link)


async def saved_file(download: Any, name: str) -> bytes:
    """What the browser wrote to disk for a download (Playwright's download event), under
    the name the page gave it."""
    assert download.suggested_filename == name
    assert await download.failure() is None
    path = await download.path()
    assert path is not None
    return Path(path).read_bytes()


async def test_upload_then_pay_with_webln_then_save(
    browser: Any, web_gateway: str, network: Network, tmp_path: Path, screenshots: Path
) -> None:
    source = tmp_path / "holiday.jpg"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 99))
    link = await upload_in_page(browser, web_gateway, source, screenshots)

    payer = network.node("payer").client
    paid: list[str] = []

    async def pay(invoice: str) -> str:
        paid.append(invoice)
        return (await payer.pay_invoice(invoice, fee_limit_msat=1_000)).preimage.hex()

    context = await browser.new_context(viewport=DESKTOP, accept_downloads=True)
    await context.expose_function("__regtestPay", pay)
    await context.add_init_script(
        "window.webln = { enable: async () => ({}),"
        " sendPayment: async (invoice) => ({ preimage: await window.__regtestPay(invoice) }) };"
    )
    page = await context.new_page()
    await page.goto(link)
    await page.locator("#pay-button").wait_for(state="visible", timeout=30_000)
    await shoot(page, screenshots, "download-ready")
    async with page.expect_download(timeout=120_000) as saving:
        await page.click("#pay-button")
    data = await saved_file(await saving.value, source.name)
    await shoot(page, screenshots, "download-done")
    await context.close()
    assert data == source.read_bytes()
    assert len(paid) == 1
    decoded = await payer.decode_invoice(paid[0])
    assert decoded.amount_msat == 3_000 * 4  # four 1 MiB chunks


async def test_pay_by_scanning_the_invoice_then_save(
    browser: Any, web_gateway: str, network: Network, tmp_path: Path
) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(os.urandom(1024 * 1024 + 5))
    link = await upload_in_page(browser, web_gateway, source, None)
    context = await browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = await context.new_page()
    await page.goto(link)
    await page.click("#pay-button")
    invoice_box = page.locator("#invoice")
    await invoice_box.wait_for(state="visible", timeout=30_000)
    await page.wait_for_function(
        "() => { const e = document.querySelector('#invoice');"
        " return (e.value || e.textContent || '').trim().startsWith('ln'); }"
    )
    invoice = await page.evaluate(
        "() => { const e = document.querySelector('#invoice');"
        " return (e.value || e.textContent).trim(); }"
    )
    # The phone in the user's hand is the regtest payer node.
    async with page.expect_download(timeout=120_000) as saving:
        await network.node("payer").client.pay_invoice(invoice, fee_limit_msat=1_000)
    assert await saved_file(await saving.value, source.name) == source.read_bytes()
    await context.close()


async def test_account_page_shows_usage(browser: Any, web_gateway: str, screenshots: Path) -> None:
    async with aiohttp.ClientSession() as session:
        _, api_key = await create_account(session, web_gateway)
    page = await browser.new_page(viewport=DESKTOP)
    await page.goto(web_gateway + "/account")
    await page.evaluate("k => localStorage.setItem('bitcache.apiKey', k)", api_key)
    await page.reload()
    await page.wait_for_selector("text=/quota|Quota|used|Used/", timeout=30_000)
    await shoot(page, screenshots, "account")
    html = await page.content()
    assert "1 TB for 30 days" in html  # the plan catalogue is listed
    text = await page.inner_text("#app")
    assert "null" not in text and "undefined" not in text
    await page.close()
