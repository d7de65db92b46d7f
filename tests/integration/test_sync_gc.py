"""The vault's garbage collection on the real regtest network: chunk files of dropped
versions and of purged trash leave the gateway (and the account's used bytes), a device
that still journals a collected chunk sends it again, and only the owner may create its
deleted file id again."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.api import BitcacheClient
from client.sync import gc
from client.sync import vault as vaults
from client.sync.engine import Report, SyncEngine
from client.sync.history import entries_at, restore
from gateway.config import GatewayConfig
from regtest.network import Network
from regtest.waiting import wait_until
from storage.crypto import b64url_encode
from storage.file_batch import BATCH_MEDIA_TYPE, encode_batch
from tests.integration.test_sync import (
    MIB,
    Device,
    bitcache,
    devices,
    finish,
    gw,
    random_file,
)
from tests.integration.test_sync_batch import item
from tests.sql import fetch_all
from tests.support import bearer, create_account

__all__ = ["gw"]  # the module-scoped gateway fixture, shared with test_sync
pytestmark = pytest.mark.integration


class Opened:
    """A device's engine, opened for a test to look at or drive directly."""

    def __init__(self, device: Device) -> None:
        self.device = device

    async def __aenter__(self) -> SyncEngine:
        self.client = BitcacheClient(self.device.config)
        await self.client.__aenter__()
        vault = await vaults.Vault.open(self.client, self.device.keys)
        self.engine = SyncEngine(vault, self.device.folder, self.device.name)
        return self.engine

    async def __aexit__(self, *exc: object) -> None:
        self.engine.close()
        await self.client.__aexit__(None, None, None)


async def account_of(device: Device) -> str:
    async with BitcacheClient(device.config) as client:
        return str((await vaults.vault_info(client))["account_id"])


async def used_bytes(config: GatewayConfig, account: str) -> int:
    [(used,)] = await fetch_all(config, "SELECT used_bytes FROM accounts WHERE id = ?", account)
    return int(used)


async def live_files(config: GatewayConfig, account: str) -> dict[str, int]:
    rows = await fetch_all(
        config,
        "SELECT id, stored_bytes FROM files WHERE owner_id = ? AND state != 'deleted'",
        account,
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def object_bytes(config: GatewayConfig, account: str) -> int:
    rows = await fetch_all(config, "SELECT object_bytes FROM vaults WHERE account_id = ?", account)
    return int(rows[0][0]) if rows else 0


async def named_by_vault(device: Device) -> set[str]:
    async with Opened(device) as engine:
        await engine.pull()
        remote = engine.state.remote()
        return gc.named((remote[oid] for oid in remote), engine.file_id)


async def check_used_is_what_the_vault_names(
    config: GatewayConfig, device: Device, account: str
) -> int:
    """The account stores exactly the chunk files its vault names (live, versions, trash),
    and its used bytes are those plus the vault's objects; returns the used bytes."""
    live = await live_files(config, account)
    assert set(live) == await named_by_vault(device)
    used = await used_bytes(config, account)
    assert used == sum(live.values()) + await object_bytes(config, account)
    return used


async def cids_of(config: GatewayConfig, account: str) -> dict[str, str]:
    rows = await fetch_all(
        config,
        "SELECT c.file_id, c.cid FROM chunks c JOIN files f ON f.id = c.file_id"
        " WHERE f.owner_id = ?",
        account,
    )
    return {str(r[0]): str(r[1]) for r in rows}


async def wait_unpinned(config: GatewayConfig, cids: set[str]) -> None:
    """The unpinner forgets a CID's row only after the block store unpinned it."""

    async def done() -> bool:
        marks = ",".join("?" * len(cids))
        rows = await fetch_all(config, f"SELECT cid FROM pins WHERE cid IN ({marks})", *cids)
        return not rows

    await wait_until("the collected chunks to be unpinned", done, timeout_s=30)


class Killed(Exception):
    """Stands for a kill -9: the local state is left as the last committed transaction."""


async def killed(report: Report) -> None:
    raise Killed


async def not_now(report: Report) -> None:
    """A collection left for later (another device's, or the next pass)."""


async def test_overwriting_a_file_keep_plus_2_times_frees_the_dropped_versions(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    config, url = gw
    [d] = await devices(url, tmp_path, 1)
    account = await account_of(d)
    async with BitcacheClient(d.config) as client:
        keep = int((await vaults.vault_info(client))["keep_versions"])
    cids: dict[str, str] = {}
    reports: list[Report] = []
    for i in range(keep + 2):
        # Big versions go through the single path, small ones in a batch.
        random_file(d.folder / "doc.bin", 3 * MIB // 2 if i % 2 == 0 else 60 * 1024)
        if i == keep:
            # Killed after the write that drops version 1, before collecting: its chunks
            # are pending in the log, still stored, and the next pass collects them.
            async with Opened(d) as engine:
                engine.collect = killed  # type: ignore[method-assign]
                with pytest.raises(Killed):
                    await engine.run_once()
                assert engine.state.log().pending
            cids |= await cids_of(config, account)
            assert set(await live_files(config, account)) > await named_by_vault(d)
            continue
        reports.append(await d.sync())
        cids |= await cids_of(config, account)
    assert all(r.uploaded_chunks >= 1 for r in reports)
    assert [r.collected_chunks > 0 for r in reports] == [False] * keep + [True]

    all_rows = await fetch_all(
        config, "SELECT id, stored_bytes, state FROM files WHERE owner_id = ?", account
    )
    never_collected = sum(int(r[1]) for r in all_rows) + await object_bytes(config, account)
    used = await check_used_is_what_the_vault_names(config, d, account)
    collected = {str(r[0]) for r in all_rows if r[2] == "deleted"}
    assert len(collected) == reports[-1].collected_chunks
    assert used < never_collected
    print(
        f"\nused bytes after {keep + 2} versions (keep {keep}): {used};"
        f" without GC: {never_collected}"
    )
    async with Opened(d) as engine:
        await engine.pull()
        [(_, entry)] = entries_at(engine, "doc.bin")
        assert [v.n for v in entry.versions] == list(range(3, keep + 3))
        assert engine.state.log().pending == []
    await wait_unpinned(config, {cids[f] for f in collected})


async def test_trash_expiry_and_emptying_free_the_bytes_and_restore_still_works(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    config, url = gw
    [d] = await devices(url, tmp_path, 1)
    account = await account_of(d)
    random_file(d.folder / "keep.bin", 400 * 1024)
    random_file(d.folder / "gone.bin", 3 * MIB // 2)
    random_file(d.folder / "old.bin", 700 * 1024)
    await d.sync()
    random_file(d.folder / "keep.bin", 300 * 1024)
    await d.sync()
    (d.folder / "gone.bin").unlink()
    (d.folder / "old.bin").unlink()
    report = await d.sync()
    assert report.purged_objects == 0 and report.collected_chunks == 0
    in_trash = await used_bytes(config, account)

    listed = await finish(await bitcache("trash", str(d.folder), "--config", str(d.config_path)))
    assert "gone.bin" in listed and "old.bin" in listed and "30 days" in listed
    async with Opened(d) as engine:
        await engine.pull()
        assert await restore(engine, "gone.bin", None) == 2
        await engine.run_once()
    assert (d.folder / "gone.bin").stat().st_size == 3 * MIB // 2
    (d.folder / "gone.bin").unlink()
    await d.sync()

    # old.bin went to the trash 31 days ago (the tenant keeps it 30): the next pass purges it.
    async with Opened(d) as engine:
        await engine.pull()
        [(oid, entry)] = entries_at(engine, "old.bin")
        month_ago = int(time.time()) - 31 * 86400
        assert await engine.vault.write(
            engine.state.counter, {oid: entry.model_copy(update={"deleted": month_ago})}
        )
    report = await d.sync()
    assert report.purged_objects == 1 and report.collected_chunks >= 1
    expired = await used_bytes(config, account)
    assert expired < in_trash
    await check_used_is_what_the_vault_names(config, d, account)

    out = await finish(
        await bitcache("trash", str(d.folder), "--empty", "--config", str(d.config_path))
    )
    assert "purged 1 entries" in out, out
    emptied = await check_used_is_what_the_vault_names(config, d, account)
    assert emptied < expired
    print(f"\nused bytes: trash full {in_trash}, after expiry {expired}, emptied {emptied}")
    listed = await finish(await bitcache("trash", str(d.folder), "--config", str(d.config_path)))
    assert "the trash is empty" in listed

    # Versions and restore still work on what is kept.
    versions = await finish(
        await bitcache("versions", str(d.folder / "keep.bin"), "--config", str(d.config_path))
    )
    assert "version 2" in versions and "version 1" in versions
    await finish(
        await bitcache(
            "restore",
            str(d.folder / "keep.bin"),
            "--version",
            "1",
            "-q",
            "--config",
            str(d.config_path),
        )
    )
    assert (d.folder / "keep.bin").stat().st_size == 400 * 1024


async def test_a_device_journaling_a_collected_chunk_sends_it_again(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    """d1 stored X and journals it; d0 deletes the file and empties the trash (X's chunk
    files deleted), once while d1 is idle and once racing d1's upload of the same bytes.
    d1 sends X again each time, and d2 downloads it byte-identical."""
    config, url = gw
    d0, d1, d2 = await devices(url, tmp_path, 3)
    account = await account_of(d0)
    # Over twice CDC's 4 MiB cap, so surely several chunks (2.5 MiB was one, once).
    random_file(d1.folder / "x.bin", 9 * MIB)
    content = (d1.folder / "x.bin").read_bytes()
    first = await d1.sync()
    assert first.uploaded_chunks >= 3
    await d0.sync()
    (d0.folder / "x.bin").unlink()
    await d0.sync()
    async with Opened(d0) as engine:
        await engine.pull()
        emptied = Report()
        await engine.purge_trash(emptied, older_than=2**62)
        await engine.collect(emptied)
    assert emptied.collected_chunks == first.uploaded_chunks
    assert await live_files(config, account) == {}

    async with Opened(d1) as engine:  # still journals X's chunk files, until it reads the log
        stale = [f for f in await cids_of_all(config, account) if engine.state.is_uploaded(f)]
        assert len(stale) == first.uploaded_chunks
    (d1.folder / "y.bin").write_bytes(content)
    again = await d1.sync()
    assert not (d1.folder / "x.bin").exists()  # deleted on d0
    assert again.uploaded_chunks == first.uploaded_chunks  # X sent again, re-creating its ids
    await check_used_is_what_the_vault_names(config, d1, account)
    await d2.sync()
    assert (d2.folder / "y.bin").read_bytes() == content

    # The race: d1 reads the vault (its journal says X is stored), then d0 collects X
    # before d1 writes its object naming X. d1's write is refused, it reads the log, and
    # sends X again before naming it.
    (d1.folder / "y.bin").unlink()
    await d1.sync()
    await d0.sync()
    async with Opened(d0) as engine:
        await engine.pull()
        engine.collect = not_now  # type: ignore[method-assign]
        await engine.purge_trash(Report(), older_than=2**62)  # X pending, still stored
    (d1.folder / "z.bin").write_bytes(content)
    async with Opened(d1) as engine:
        write = engine.vault.write
        raced: list[int] = []

        async def racing_write(
            if_counter: int, entries: Any, log: Any = None, delete_files: Any = None
        ) -> int | None:
            if not raced and entries:
                async with Opened(d0) as other:
                    await other.pull()
                    collected = Report()
                    await other.collect(collected)
                    raced.append(collected.collected_chunks)
            return await write(if_counter, entries, log, delete_files)

        engine.vault.write = racing_write  # type: ignore[method-assign]
        report = await engine.run_once()
    assert raced == [first.uploaded_chunks]
    assert report.uploaded_chunks == first.uploaded_chunks
    await check_used_is_what_the_vault_names(config, d1, account)
    await d2.sync()
    assert (d2.folder / "z.bin").read_bytes() == content
    assert not (d2.folder / "y.bin").exists()


async def cids_of_all(config: GatewayConfig, account: str) -> list[str]:
    rows = await fetch_all(config, "SELECT id FROM files WHERE owner_id = ?", account)
    return [str(r[0]) for r in rows]


async def post(
    s: aiohttp.ClientSession, url: str, key: str, path: str, body: Any
) -> tuple[int, dict[str, Any]]:
    async with s.post(f"{url}{path}", json=body, headers=bearer(key)) as r:
        return r.status, await r.json(content_type=None)


async def test_only_the_owner_re_creates_a_deleted_file_id(
    gw: tuple[GatewayConfig, str], network: Network
) -> None:
    config, url = gw
    header, manifest, chunk = item(9000)
    fid = header["file_id"]
    body = {"header": header, "manifest": manifest, "price_msat": 0}
    other_live = item(5000)
    async with aiohttp.ClientSession() as s:
        owner, key = await create_account(s, url)
        _, other_key = await create_account(s, url)

        async def put_and_complete() -> str:
            async with s.put(
                f"{url}/v1/files/{fid}/chunks/0", data=chunk, headers=bearer(key)
            ) as r:
                assert r.status == 201, await r.text()
                cid = str((await r.json())["cid"])
            status, done = await post(s, url, key, f"/v1/files/{fid}/complete", None)
            assert (status, done["state"]) == (200, "complete")
            return cid

        assert (await post(s, url, key, "/v1/files", body))[0] == 201
        cid = await put_and_complete()
        size = await used_bytes(config, owner)
        assert size > 0
        status, live_state = await post(
            s, url, key, "/v1/files", {"header": other_live[0], "manifest": other_live[1]}
        )
        assert status == 201
        size_with_other = await used_bytes(config, owner)
        async with s.delete(f"{url}/v1/files/{fid}", headers=bearer(key)) as r:
            assert r.status == 200
        assert await used_bytes(config, owner) == size_with_other - size
        async with s.get(f"{url}/v1/files/{fid}") as r:
            assert r.status == 410

        # Another account: refused for the deleted id exactly as for a live one.
        refusals = []
        for taken in (body, {"header": other_live[0], "manifest": other_live[1]}):
            status, problem = await post(s, url, other_key, "/v1/files", taken)
            refusals.append((status, problem["type"], problem["title"]))
        assert refusals[0] == refusals[1] and refusals[0][0] == 409
        async with s.post(
            f"{url}/v1/files/batch",
            data=encode_batch([(header, manifest, chunk)]),
            headers={**bearer(other_key), "Content-Type": BATCH_MEDIA_TYPE},
        ) as r:
            assert r.status == 409
        # Not even through a vault collection of its own.
        status, _ = await post(
            s,
            url,
            other_key,
            "/v1/vault/objects",
            {"if_counter": 0, "log": b64url_encode(os.urandom(64)), "delete_files": [fid]},
        )
        assert status == 403
        async with s.get(f"{url}/v1/files/{fid}") as r:
            assert r.status == 410

        # The owner: the same file again, charged once, its bytes stored and pinned again.
        status, state = await post(s, url, key, "/v1/files", body)
        assert (status, state["state"], state["missing"]) == (201, "uploading", [0])
        assert (await post(s, url, key, "/v1/files", body))[0] == 200  # not twice
        assert await put_and_complete() == cid
        assert await used_bytes(config, owner) == size_with_other
        async with s.get(f"{url}/v1/files/{fid}/chunks/0", headers=bearer(key)) as r:
            assert r.status == 200 and await r.read() == chunk
        [(refs,)] = await fetch_all(config, "SELECT refs FROM pins WHERE cid = ?", cid)
        assert refs == 1
        if network.kubo is not None:
            async with s.post(
                f"{network.kubo.api_url}/api/v0/pin/ls", params={"arg": cid, "type": "recursive"}
            ) as r:
                assert r.status == 200, await r.text()

        # Collected through the vault (in its compare-and-set), then the same request
        # replayed after the owner stored the file again: refused, the file stays.
        gc_write = {"if_counter": 0, "log": b64url_encode(os.urandom(64)), "delete_files": [fid]}
        assert (await post(s, url, key, "/v1/vault/objects", gc_write))[0] == 200
        assert await used_bytes(config, owner) == size_with_other - size + 64
        async with s.post(
            f"{url}/v1/files/batch",
            data=encode_batch([(header, manifest, chunk)]),
            headers={**bearer(key), "Content-Type": BATCH_MEDIA_TYPE},
        ) as r:
            assert r.status == 200 and (await r.json())["stored"] == 1
        assert await used_bytes(config, owner) == size_with_other + 64
        status, problem = await post(s, url, key, "/v1/vault/objects", gc_write)
        assert (status, problem["type"].rsplit("/", 1)[-1]) == (409, "vault-counter-moved")
        async with s.get(f"{url}/v1/files/{fid}/chunks/0", headers=bearer(key)) as r:
            assert r.status == 200 and await r.read() == chunk
        assert live_state["state"] == "uploading"


async def test_versions_a_writer_drops_without_the_log_are_collected_by_a_device_that_saw_them(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    """The web page trims versions to keep_versions without the deletion log: a sync
    device that had read the dropped versions notices and collects their chunk files."""
    config, url = gw
    d0, d1 = await devices(url, tmp_path, 2)
    account = await account_of(d0)
    for size in (700 * 1024, 800 * 1024, 900 * 1024):
        random_file(d0.folder / "f.bin", size)
        await d0.sync()
    await d1.sync()  # d1 has read all three versions
    async with Opened(d0) as engine:
        await engine.pull()
        [(oid, entry)] = entries_at(engine, "f.bin")
        kept = entry.model_copy(update={"versions": entry.versions[-1:]})
        dropped = gc.dropped(entry, kept, engine.file_id)
        assert await engine.vault.write(engine.state.counter, {oid: kept})  # no log
    before = await used_bytes(config, account)
    report = await d1.sync()
    assert report.collected_chunks == len(dropped) >= 2
    assert not dropped & set(await live_files(config, account))
    assert await check_used_is_what_the_vault_names(config, d1, account) < before
    await d0.sync()
    assert (d0.folder / "f.bin").stat().st_size == 900 * 1024
