"""`bitcache login` end to end on the regtest network: a restored account (bcrypt, premium
time left) logs in through the real command with --password-stdin, its old hash is gone,
the next login is by proof alone, and `bitcache account usage` shows the restored plan and
quota. Also `bitcache account create --username` followed by a login."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import bcrypt
import pytest

from gateway.config import GatewayConfig, TenantSettings
from gateway.identity.import_source import tenant_policies
from gateway.persistence.legacy_import import ImportOptions, run_import
from gateway.server import serve
from regtest.network import Network
from sandbox.run import sandbox_client_config
from tests.conftest import gateway_config
from tests.sql import fetch_all

PASSWORD = "hunter2 but longer"
FUTURE = int(time.time()) + 60 * 86_400
QUOTA = 250 * 10**9

pytestmark = pytest.mark.integration


async def bitcache(*args: str, stdin: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _legacy_row(config: GatewayConfig) -> tuple[object, ...]:
    [row] = await fetch_all(
        config, "SELECT legacy_hash, proof_hash FROM accounts WHERE username = 'Alice'"
    )
    return tuple(row)


async def test_bitcache_login_restores_an_old_account(network: Network, tmp_path: Path) -> None:
    config = gateway_config(network, tmp_path / "gw")  # the database under test
    async with serve(config) as url:
        source = tmp_path / "old.jsonl"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        row = {
            "legacy_id": "u1029",
            "username": "Alice",
            "password": {"scheme": "bcrypt", "hash": hashed},
            "premium_until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FUTURE)),
            "quota_bytes": QUOTA,
        }
        source.write_text(json.dumps(row) + "\n")
        result = await asyncio.to_thread(
            run_import,
            ImportOptions(
                path=source,
                db_path=Path() if config.uses_postgres else config.database_path,
                database_url=config.database_url if config.uses_postgres else None,
                policies=tenant_policies([TenantSettings()]),
                rejects_path=tmp_path / "rejects.jsonl",
            ),
        )
        assert result.counts.inserted == 1 and result.counts.plans == 1
        client_cfg = tmp_path / "client.json"
        client_cfg.write_text(sandbox_client_config(network, url).model_dump_json())

        code, out, err = await bitcache(
            "login", "alice", "--password-stdin", "--config", str(client_cfg), stdin="wrong\n"
        )
        assert code != 0 and "wrong username or password" in err, (out, err)
        assert json.loads(client_cfg.read_text())["api_key"] is None

        code, out, err = await bitcache(
            "login", "ALICE", "--password-stdin", "--config", str(client_cfg), stdin=PASSWORD
        )
        assert code == 0, err
        assert PASSWORD not in out + err
        first_key = json.loads(client_cfg.read_text())["api_key"]
        assert first_key and first_key not in out + err
        legacy_hash, proof_hash = await _legacy_row(config)
        assert legacy_hash is None and proof_hash is not None

        # The restored plan and quota, through the command.
        code, out, err = await bitcache("account", "--config", str(client_cfg), "usage", stdin="")
        assert code == 0, err
        usage = json.loads(out)
        assert usage["free_quota_bytes"] == QUOTA
        [plan] = usage["plans"]
        assert plan["active"] and plan["ends_at"] == FUTURE

        # Next login: the old hash is gone, so only the proof path can succeed.
        code, out, err = await bitcache(
            "login", "alice", "--password-stdin", "--config", str(client_cfg), stdin=PASSWORD
        )
        assert code == 0, err
        assert json.loads(client_cfg.read_text())["api_key"] != first_key

        # A new account with a username, then a login on another device.
        other_cfg = tmp_path / "other.json"
        other_cfg.write_text(sandbox_client_config(network, url).model_dump_json())
        code, out, err = await bitcache(
            "account",
            "--config",
            str(other_cfg),
            "create",
            "--username",
            "Bob",
            "--password-stdin",
            stdin="bob's password\n",
        )
        assert code == 0, err
        third_cfg = tmp_path / "third.json"
        third_cfg.write_text(sandbox_client_config(network, url).model_dump_json())
        code, out, err = await bitcache(
            "login", "bob", "--password-stdin", "--config", str(third_cfg), stdin="bob's password"
        )
        assert code == 0, err
        assert "bob's password" not in out + err
