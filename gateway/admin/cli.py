"""`bitcache-admin tenant add|list|set|remove`: manage the brands of a deployment.

Edits the tenants file the gateway reads (`tenants_file` in its config); the gateway picks
up a change within a second, without a restart. Every edit is validated as a whole before
the file is replaced, so a mistake never reaches a running gateway.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config import TenantSettings, validation_problems
from gateway.identity import import_cli
from gateway.tenants.registry import TenantFileError, read_tenants_file, write_tenants_file

TENANTS_ENV = "BITCACHE_TENANTS"


class AdminError(Exception):
    pass


def _path(args: argparse.Namespace) -> Path:
    return Path(args.file or os.environ.get(TENANTS_ENV) or "tenants.json")


def _load(path: Path, missing_ok: bool = False) -> list[TenantSettings]:
    if missing_ok and not path.exists():
        return []
    try:
        return read_tenants_file(path)
    except TenantFileError as exc:
        raise AdminError(str(exc)) from exc


def _save(path: Path, tenants: list[TenantSettings]) -> None:
    try:
        write_tenants_file(path, tenants)
    except ValueError as exc:
        raise AdminError(str(exc)) from exc


def _build(data: dict[str, Any]) -> TenantSettings:
    try:
        return TenantSettings.model_validate(data)
    except ValidationError as exc:
        raise AdminError(validation_problems(exc)) from exc


def _parse_value(text: str) -> Any:
    """JSON if it parses (numbers, lists, objects, null), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AdminError(f"{key}: {part} is not an object")
        node = child
    node[leaf] = value


def cmd_list(args: argparse.Namespace) -> None:
    for tenant in _load(_path(args), missing_ok=True):
        node = tenant.lnd.rest_url if tenant.lnd else "gateway's node"
        print(
            f"{tenant.id:<16} {', '.join(tenant.hostnames):<40} {tenant.display_name}"
            f"  (fee {tenant.operator_fee_bps} bps, LND: {node})"
        )


def cmd_add(args: argparse.Namespace) -> None:
    path = _path(args)
    tenants = _load(path, missing_ok=True)
    if any(t.id == args.id for t in tenants):
        raise AdminError(f"tenant {args.id!r} exists; use `tenant set`")
    data: dict[str, Any] = {"id": args.id, "hostnames": args.host}
    optional = {
        "display_name": args.name,
        "public_url": args.public_url,
        "default_price_msat": args.price_msat,
        "operator_fee_bps": args.fee_bps,
        "free_quota_bytes": None
        if args.free_quota_gb is None
        else int(args.free_quota_gb * 1_000_000_000),
    }
    data |= {k: v for k, v in optional.items() if v is not None}
    if args.lnd_rest_url:
        if not (args.lnd_tls_cert and args.lnd_macaroon):
            raise AdminError("--lnd-rest-url needs --lnd-tls-cert and --lnd-macaroon")
        data["lnd"] = {
            "rest_url": args.lnd_rest_url,
            "tls_cert": args.lnd_tls_cert,
            "macaroon": args.lnd_macaroon,
        }
    _save(path, [*tenants, _build(data)])
    print(f"added tenant {args.id} ({', '.join(args.host)}) to {path}")


def cmd_set(args: argparse.Namespace) -> None:
    path = _path(args)
    tenants = _load(path)
    index = next((i for i, t in enumerate(tenants) if t.id == args.id), None)
    if index is None:
        raise AdminError(f"no tenant {args.id!r}")
    data = tenants[index].model_dump(mode="json")
    for assignment in args.assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise AdminError(f"{assignment!r}: write key=value, e.g. operator_fee_bps=500")
        if key == "id":
            raise AdminError("a tenant's id cannot change (its data is filed under it)")
        _set_dotted(data, key, _parse_value(value))
    tenants[index] = _build(data)
    _save(path, tenants)
    print(f"updated tenant {args.id}")


def cmd_remove(args: argparse.Namespace) -> None:
    path = _path(args)
    tenants = _load(path)
    kept = [t for t in tenants if t.id != args.id]
    if len(kept) == len(tenants):
        raise AdminError(f"no tenant {args.id!r}")
    _save(path, kept)
    print(
        f"removed tenant {args.id}; its accounts and files stay stored but unreachable "
        "until a tenant with this id is added again"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitcache-admin", description=__doc__)
    parser.add_argument("--file", help=f"tenants file (default ${TENANTS_ENV} or tenants.json)")
    top = parser.add_subparsers(dest="area", required=True)
    tenant = top.add_parser("tenant", help="brands served by this deployment")
    sub = tenant.add_subparsers(dest="action", required=True)
    sub.add_parser("list").set_defaults(handler=cmd_list)
    add = sub.add_parser("add")
    add.add_argument("id")
    add.add_argument("--host", action="append", required=True, help="host name (repeatable)")
    add.add_argument("--name")
    add.add_argument("--public-url")
    add.add_argument("--price-msat", type=int)
    add.add_argument("--free-quota-gb", type=float)
    add.add_argument("--fee-bps", type=int)
    add.add_argument("--lnd-rest-url")
    add.add_argument("--lnd-tls-cert")
    add.add_argument("--lnd-macaroon")
    add.set_defaults(handler=cmd_add)
    set_ = sub.add_parser("set", help="e.g. set acme operator_fee_bps=500 brand.logo_url=…")
    set_.add_argument("id")
    set_.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    set_.set_defaults(handler=cmd_set)
    remove = sub.add_parser("remove")
    remove.add_argument("id")
    remove.set_defaults(handler=cmd_remove)
    import_cli.register(parser, top)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
