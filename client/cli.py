"""The ``bitcache`` command: upload, get, info, account, sandbox.

Results go to stdout (the share link, where a file was saved); progress and errors go to
stderr. Errors print ``error: <message>`` and exit 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from client import account, login
from client.api import BitcacheClient, DownloadResult, FileInfo
from client.config import (
    CONFIG_ENV,
    ClientConfig,
    default_config_path,
    load_config,
    save_config,
)
from client.errors import ClientError, ConfigError
from client.folder import FolderResult, download_folder, folder_info
from client.payer import format_msat
from client.progress import format_bytes
from client.sync import cli as sync_cli
from storage.capability import ShareLink
from storage.errors import StorageError
from storage.folder_link import is_folder_link

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _config(args: argparse.Namespace) -> ClientConfig:
    path = Path(args.config).expanduser() if args.config else None
    cfg = load_config(path)
    gateway = getattr(args, "gateway", None)
    if gateway:
        try:
            cfg = ClientConfig.model_validate(cfg.model_dump() | {"gateway_url": gateway})
        except ValidationError as exc:
            msg = "; ".join(str(e["msg"]) for e in exc.errors())
            raise ConfigError(f"--gateway: {msg}") from None
    return cfg


def _price_msat(text: str) -> int:
    """``--price-sat`` value: sats, with up to three decimals (millisatoshis)."""
    try:
        sats = Decimal(text)
    except InvalidOperation:
        raise ClientError(f"--price-sat: {text!r} is not a number") from None
    msat = sats * 1000
    if not sats.is_finite() or sats < 0 or msat != msat.to_integral_value():
        raise ClientError("--price-sat must be zero or more, in whole millisatoshis (0.001 sat)")
    return int(msat)


def _cmd_upload(args: argparse.Namespace) -> int:
    cfg = _config(args)
    price = _price_msat(args.price_sat) if args.price_sat is not None else None

    async def run() -> ShareLink:
        async with BitcacheClient(cfg) as client:
            return await client.upload(Path(args.file), price_msat=price, progress=not args.quiet)

    print(asyncio.run(run()).to_url())
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    cfg = _config(args)
    out = Path(args.output).expanduser() if args.output else None
    if is_folder_link(args.link):
        return _get_folder(cfg, args.link, out, not args.quiet)

    async def run() -> DownloadResult:
        async with BitcacheClient(cfg) as client:
            return await client.download(args.link, out=out, progress=not args.quiet)

    result = asyncio.run(run())
    print(f"saved {result.path} ({format_bytes(result.size)})")
    if result.chunks_bought:
        credit = result.credit_spent_msat
        print(
            f"paid {format_msat(result.paid_msat)} + {format_msat(result.fees_msat)} fee "
            f"for {result.chunks_bought} of {result.chunks} chunks"
            + (f" ({format_msat(credit)} of it from prepaid credit)" if credit else "")
        )
    else:
        print("paid nothing")
    return 0


def _get_folder(cfg: ClientConfig, link: str, out: Path | None, progress: bool) -> int:
    async def run() -> FolderResult:
        async with BitcacheClient(cfg) as client:
            return await download_folder(client, link, out=out, progress=progress)

    result = asyncio.run(run())
    print(f"saved {result.files} files in {result.path} ({format_bytes(result.size)})")
    if result.skipped:
        print(f"{result.skipped} files were already complete")
    if result.chunks_bought:
        print(
            f"paid {format_msat(result.paid_msat)} + {format_msat(result.fees_msat)} fee "
            f"for {result.chunks_bought} of {result.chunks} chunks"
        )
    else:
        print("paid nothing")
    return 0


def _describe_info(info: FileInfo) -> list[str]:
    modified = (
        datetime.fromtimestamp(info.modified, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if info.modified is not None
        else "unknown"
    )
    price = (
        "free"
        if info.price_msat == 0
        else f"{format_msat(info.price_msat)} per chunk, "
        f"{format_msat(info.total_price_msat)} for the whole file"
    )
    return [
        f"name:     {info.name}",
        f"size:     {format_bytes(info.size)} ({info.size} bytes)",
        f"type:     {info.media_type}",
        f"modified: {modified}",
        f"chunks:   {info.chunk_count} of {format_bytes(info.chunk_size)}",
        f"price:    {price}",
        f"state:    {info.state}",
        f"gateway:  {info.gateway}",
    ]


def _cmd_info(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if is_folder_link(args.link):

        async def folder() -> list[str]:
            async with BitcacheClient(cfg) as client:
                return await folder_info(client, args.link)

        print("\n".join(asyncio.run(folder())))
        return 0

    async def run() -> FileInfo:
        async with BitcacheClient(cfg) as client:
            return await client.info(args.link)

    print("\n".join(_describe_info(asyncio.run(run()))))
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    # The sandbox sits above the client (it runs a gateway and regtest), so the client never
    # imports it: this process becomes `python -m sandbox` instead.
    argv = [sys.executable, "-m", "sandbox", "--port", str(args.port)]
    if args.config:
        argv += ["--config", args.config]
    os.execv(sys.executable, argv)


def _read_password(args: argparse.Namespace) -> str:
    """From stdin (first line) with --password-stdin, else a prompt that does not echo."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
    if not password:
        raise ClientError("the password is empty")
    return password


def _cmd_login(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = Path(args.config).expanduser() if args.config else None
    password = _read_password(args)

    async def run() -> tuple[Any, str]:
        async with BitcacheClient(cfg.model_copy(update={"api_key": None})) as client:
            result = await login.login(client, args.username, password)
        logged_in = cfg.model_copy(update={"api_key": result["api_key"]})
        save_config(logged_in, path)
        # Logging in on a new device unlocks the vault too (issue 14): same password, but
        # its own derivation (docs/format.md §14.3).
        async with BitcacheClient(logged_in) as client:
            try:
                unlocked = await sync_cli.unlock_at_login(client, args, password)
            except StorageError:
                return result, "; its vault has another password: `bitcache vault unlock`"
        return result, "; its vault is unlocked on this device" if unlocked else ""

    result, vault_note = asyncio.run(run())
    print(
        f"logged in to account {result['account_id']}; its new API key is saved in "
        f"{path or default_config_path()}{vault_note}"
    )
    return 0


def _cmd_account(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = Path(args.config).expanduser() if args.config else None
    username = getattr(args, "username", None)
    password = _read_password(args) if username else None

    async def run() -> Any:
        async with BitcacheClient(cfg) as client:
            if args.action == "create":
                if username and password:
                    return await login.create(client, username, password)
                return await account.create(client)
            if args.action == "usage":
                return await account.usage(client)
            if args.action == "plans":
                return {"plans": await account.plans(client)}
            if args.action == "buy":
                return await account.buy(client, args.plan)
            return await account.withdraw(client, _price_msat(args.amount_sat))

    result = asyncio.run(run())
    if args.action == "create":
        save_config(cfg.model_copy(update={"api_key": result["api_key"]}), path)
        print(
            f"account {result['account_id']} created; its API key is saved in "
            f"{path or default_config_path()}"
        )
        return 0
    print(json.dumps(result, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="client configuration file")
    parser = argparse.ArgumentParser(
        prog="bitcache",
        description="End-to-end encrypted file sharing, paid chunk by chunk over Lightning.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("upload", parents=[common], help="encrypt and upload a file")
    up.add_argument("file", metavar="FILE")
    up.add_argument("--price-sat", metavar="N", help="price per chunk in sats (gateway default)")
    up.add_argument("--gateway", metavar="URL", help="gateway to upload to")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    up.set_defaults(handler=_cmd_upload)

    get = sub.add_parser(
        "get", parents=[common], help="download (and pay for) a shared file or folder"
    )
    get.add_argument("link", metavar="LINK")
    get.add_argument("-o", "--output", metavar="PATH", help="file or directory to save to")
    get.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    get.set_defaults(handler=_cmd_get)

    info = sub.add_parser("info", parents=[common], help="show what a share link points at")
    info.add_argument("link", metavar="LINK")
    info.set_defaults(handler=_cmd_info)

    acct = sub.add_parser("account", parents=[common], help="your account on the gateway")
    acct.add_argument("--gateway", metavar="URL", help="gateway (default from the config)")
    acct_sub = acct.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = acct_sub.add_parser("create", help="create an account and save its API key")
    create.add_argument("--username", metavar="NAME", help="a username to log in with later")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    acct_sub.add_parser("usage", help="storage used, quota, plans, earnings")
    acct_sub.add_parser("plans", help="the plans on sale")
    buy = acct_sub.add_parser("buy", help="buy a plan with your Lightning node")
    buy.add_argument("plan", metavar="PLAN_ID")
    wd = acct_sub.add_parser("withdraw", help="withdraw earnings to your Lightning node")
    wd.add_argument("amount_sat", metavar="SATS")
    acct.set_defaults(handler=_cmd_account)

    log_in = sub.add_parser(
        "login", parents=[common], help="log in with a username; saves a new API key"
    )
    log_in.add_argument("username", metavar="USERNAME")
    log_in.add_argument("--gateway", metavar="URL", help="gateway (default from the config)")
    log_in.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    log_in.set_defaults(handler=_cmd_login)

    box = sub.add_parser("sandbox", parents=[common], help="run a local regtest sandbox")
    box.add_argument("--port", type=int, default=8402, help="gateway port (default 8402)")
    box.set_defaults(handler=_cmd_sandbox)
    sync_cli.add_commands(sub, common)
    return parser


@contextlib.contextmanager
def _config_named(config: str | None) -> Iterator[None]:
    """--config stands for $BITCACHE_CONFIG while the command runs, so what is kept beside
    the configuration (the prepaid credit) goes beside that file, not the default one."""
    if not config:
        yield
        return
    before = os.environ.get(CONFIG_ENV)
    os.environ[CONFIG_ENV] = str(Path(config).expanduser())
    try:
        yield
    finally:
        if before is None:
            del os.environ[CONFIG_ENV]
        else:
            os.environ[CONFIG_ENV] = before


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sync_handler = getattr(args, "sync_handler", None)
    handler: Callable[[argparse.Namespace], int] = (
        (lambda a: sync_handler(a, _config)) if sync_handler else args.handler
    )
    try:
        with _config_named(getattr(args, "config", None)):
            return handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ClientError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
