"""``bitcache vault|sync|versions|restore|share``: the commands of the folder sync."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from client.api import BitcacheClient
from client.config import ClientConfig, default_config_path
from client.errors import ClientError
from client.folder import share_folder
from client.progress import format_bytes
from client.sync import vault as vaults
from client.sync.engine import Report, SyncEngine
from client.sync.history import entries_at, restore
from client.sync.naming import clean_device
from client.sync.state import State, find_folder
from client.sync.watch import watch

log = logging.getLogger("bitcache.sync")
ConfigLoader = Callable[[argparse.Namespace], ClientConfig]


def _keys_path(args: argparse.Namespace) -> Path:
    return vaults.key_file(Path(args.config).expanduser() if args.config else default_config_path())


async def unlock_at_login(client: BitcacheClient, args: argparse.Namespace, password: str) -> bool:
    """`bitcache login` unlocks the vault with the login password, keys beside the config."""
    return await vaults.unlock_at_login(client, _keys_path(args), password)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("vault password: ")


def _device(folder: Path, wanted: str | None) -> str:
    state = State(folder)
    try:
        device = state.get("device")
        if wanted:
            device = clean_device(wanted)
        if device is None:
            device = clean_device(socket.gethostname().split(".")[0])
        state.set("device", device)
        return device
    finally:
        state.close()


@asynccontextmanager
async def _engine(
    cfg: ClientConfig, args: argparse.Namespace, folder: Path, device: str, progress: bool = False
) -> AsyncIterator[SyncEngine]:
    """The folder's sync engine on the unlocked vault, its local state closed afterwards."""
    async with BitcacheClient(cfg) as client:
        vault = await vaults.Vault.open(client, _keys_path(args))
        engine = SyncEngine(vault, folder, device, progress=progress)
        try:
            yield engine
        finally:
            engine.close()


def _summary(report: Report) -> str:
    parts = [
        f"uploaded {format_bytes(report.uploaded_bytes)} in {report.uploaded_chunks} chunks"
        f" ({report.reused_chunks} already on the gateway)",
        f"downloaded {format_bytes(report.downloaded_bytes)}"
        f" ({report.fetched_chunks} chunks fetched)",
        f"{report.hashed_files} files hashed",
        f"{report.sent_objects} vault objects written",
    ]
    if report.purged_objects or report.collected_chunks:
        parts.append(
            f"{report.purged_objects} trash entries expired,"
            f" {report.collected_chunks} unused chunk files deleted"
        )
    if report.conflicts:
        parts.append(f"{len(report.conflicts)} conflict copies: " + ", ".join(report.conflicts))
    return "; ".join(parts)


def cmd_vault(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg = load(args)
    keys = _keys_path(args)

    async def run() -> str:
        async with BitcacheClient(cfg) as client:
            if args.action == "init":
                account = await vaults.init_vault(client, keys, _password(args))
                return f"vault created for {account}; unlocked on this device"
            if args.action == "unlock":
                if args.link:
                    account = await vaults.unlock_with_link(client, keys, args.link)
                else:
                    account = await vaults.unlock_with_password(client, keys, _password(args))
                return f"vault of {account} unlocked on this device"
            code = await vaults.make_link(client, keys)
            return f"link code (one use): {code}"

    print(asyncio.run(run()))
    return 0


def cmd_sync(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg = load(args)
    folder = Path(args.dir).expanduser()
    if not folder.is_dir():
        raise ClientError(f"{folder} is not a folder")
    device = _device(folder, args.device)

    async def run() -> None:
        async with _engine(cfg, args, folder, device, progress=not args.quiet) as engine:
            if args.watch:
                # SIGINT and SIGTERM end the watch cleanly (state closed, exit 0).
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await watch(engine, on_pass=lambda r: print(_summary(r), flush=True), stop=stop)
                print("stopped", flush=True)
            else:
                print(_summary(await engine.run_once()))

    asyncio.run(run())
    return 0


def _open(args: argparse.Namespace, load: ConfigLoader) -> tuple[ClientConfig, Path, str]:
    folder, rel = find_folder(Path(args.path))
    return load(args), folder, rel


def cmd_versions(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg, folder, rel = _open(args, load)

    async def run() -> list[str]:
        async with _engine(cfg, args, folder, _device(folder, None)) as engine:
            await engine.pull()
            lines = []
            for _, entry in entries_at(engine, rel):
                where = "in the trash" if entry.deleted is not None else "current"
                lines.append(f"{entry.path} ({where})")
                for v in reversed(entry.versions):
                    when = datetime.fromtimestamp(v.mtime_ns / 1e9, UTC)
                    lines.append(
                        f"  version {v.n}: {format_bytes(v.size)}, modified "
                        f"{when:%Y-%m-%d %H:%M:%S} UTC, from {v.device}"
                    )
            if not lines:
                raise ClientError(f"the vault has nothing at {rel}")
            return lines

    print("\n".join(asyncio.run(run())))
    return 0


def cmd_restore(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg, folder, rel = _open(args, load)

    async def run() -> str:
        async with _engine(
            cfg, args, folder, _device(folder, None), progress=not args.quiet
        ) as engine:
            try:
                n = await restore(engine, rel, args.version)
            except LookupError as exc:
                raise ClientError(str(exc)) from None
            await engine.run_once()
            return f"restored {rel} as version {n}"

    print(asyncio.run(run()))
    return 0


def cmd_trash(args: argparse.Namespace, load: ConfigLoader) -> int:
    """Lists the vault's trash (restore with `bitcache restore PATH`); with --empty, purges
    it now and deletes the chunk files nothing names any more."""
    cfg, folder, _ = _open(args, load)

    async def run() -> list[str]:
        async with _engine(cfg, args, folder, _device(folder, None)) as engine:
            await engine.pull()
            if args.empty:
                report = Report()
                await engine.purge_trash(report, older_than=2**62)
                await engine.collect(report)
                return [
                    f"purged {report.purged_objects} entries from the trash;"
                    f" {report.collected_chunks} chunk files deleted"
                ]
            remote = engine.state.remote()
            trash = sorted(
                (b.deleted, b.path, oid)
                for oid, b in remote.briefs.items()
                if b.deleted is not None
            )
            lines = []
            for deleted, path, oid in trash:
                when = datetime.fromtimestamp(deleted, UTC)
                current = remote[oid].current
                size = format_bytes(current.size) if current else "folder"
                lines.append(f"{path}: {size}, deleted {when:%Y-%m-%d %H:%M:%S} UTC")
            days = engine.vault.trash_days
            kept = "until emptied" if days is None else f"for {days} days"
            return [*(lines or ["the trash is empty"]), f"(the trash keeps entries {kept})"]

    print("\n".join(asyncio.run(run())))
    return 0


def cmd_share(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg = load(args)
    path = Path(args.path)
    if not path.is_file() and not path.is_dir():
        raise ClientError(f"{path} is not a file or folder")

    is_dir = path.is_dir()

    async def run() -> str:
        async with BitcacheClient(cfg) as client:
            if is_dir:  # a folder link (docs/format.md §16)
                return (await share_folder(client, path, progress=not args.quiet)).to_url()
            return (await client.upload(path, progress=not args.quiet)).to_url()

    print(asyncio.run(run()))
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Registers the sync commands on the ``bitcache`` parser."""
    v = sub.add_parser("vault", parents=[common], help="the account's encrypted vault")
    v.add_argument("action", choices=["init", "unlock", "link"])
    v.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    v.add_argument("--link", metavar="CODE", help="unlock with a code from `bitcache vault link`")
    v.set_defaults(sync_handler=cmd_vault)

    s = sub.add_parser("sync", parents=[common], help="two-way sync of a folder with the vault")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--watch", action="store_true", help="keep syncing as things change")
    s.add_argument("--device", metavar="NAME", help="this device's name (conflict copies)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.set_defaults(sync_handler=cmd_sync)

    ver = sub.add_parser("versions", parents=[common], help="versions of a synced file")
    ver.add_argument("path", metavar="PATH")
    ver.set_defaults(sync_handler=cmd_versions)

    r = sub.add_parser("restore", parents=[common], help="restore from the trash or a version")
    r.add_argument("path", metavar="PATH")
    r.add_argument("--version", type=int, metavar="V", help="version number (`bitcache versions`)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    r.set_defaults(sync_handler=cmd_restore)

    t = sub.add_parser("trash", parents=[common], help="the vault's trash: list or empty it")
    t.add_argument("path", metavar="DIR", help="the synced folder (or a path inside it)")
    t.add_argument("--empty", action="store_true", help="purge it now and free its chunks")
    t.set_defaults(sync_handler=cmd_trash)

    sh = sub.add_parser(
        "share", parents=[common], help="a paid share link for a synced file or folder"
    )
    sh.add_argument("path", metavar="PATH")
    sh.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    sh.set_defaults(sync_handler=cmd_share)
