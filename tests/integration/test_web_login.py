"""The account page's login form in headless Chromium against a real gateway: an account
restored from the old service logs in with its old password (argon2id proof derived in the
page), and the page then shows the restored plan and free quota."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import TenantSettings
from gateway.identity.import_source import tenant_policies
from gateway.persistence.legacy_import import ImportOptions, run_import
from gateway.server import serve
from regtest.network import Network
from tests.conftest import gateway_config
from tests.integration.test_web import ARGS, CHROMIUM, DESKTOP
from tests.sql import fetch_value

playwright = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.integration

PASSWORD = "old site password"
FUTURE = int(time.time()) + 30 * 86_400


async def test_the_login_form_restores_an_old_account(network: Network, tmp_path: Path) -> None:
    config = gateway_config(network, tmp_path / "gw")  # the database under test
    async with serve(config) as url:
        source = tmp_path / "old.jsonl"
        row = {
            "legacy_id": "w1",
            "username": "Erin",
            "password": {"scheme": "sha256", "hash": hashlib.sha256(PASSWORD.encode()).hexdigest()},
            "premium_until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FUTURE)),
            "quota_bytes": 200 * 10**9,
        }
        source.write_text(json.dumps(row) + "\n")
        await asyncio.to_thread(
            run_import,
            ImportOptions(
                path=source,
                db_path=Path() if config.uses_postgres else config.database_path,
                database_url=config.database_url if config.uses_postgres else None,
                policies=tenant_policies([TenantSettings()]),
                rejects_path=tmp_path / "rejects.jsonl",
            ),
        )
        async with playwright.async_playwright() as p:
            browser: Any = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport=DESKTOP)
            await page.goto(url + "/account")
            await page.fill("#login-username", "erin")
            await page.fill("#login-password", "wrong")
            await page.click("#login-button")
            await page.wait_for_selector("text=Wrong username or password.", timeout=60_000)
            await page.fill("#login-password", PASSWORD)
            await page.click("#login-button")
            await page.wait_for_selector("#active-plans", timeout=60_000)
            text = await page.inner_text("#usage-card")
            assert "Free tier: 200" in text, text
            key = await page.evaluate("localStorage.getItem('bitcache.apiKey')")
            assert key and key.startswith("bck_")
            assert await page.input_value("#login-password") == ""
            await browser.close()
        legacy = await fetch_value(
            config, "SELECT legacy_hash FROM accounts WHERE legacy_id = 'w1'"
        )
        assert legacy is None
