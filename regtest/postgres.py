"""A throwaway PostgreSQL server for tests and CI, from Debian's `postgresql` package.

`start()` makes a cluster in a fresh temp dir (initdb with trust auth, fsync off) and runs
`postgres` on a free loopback port, its socket in the same dir; `stop()` ends it and removes
the dir. initdb and postgres refuse to run as root, so as root both run as the `postgres`
user (the package creates it), and the dir is made in the system temp dir, which that user
can reach. The server is a child that gets SIGINT (fast shutdown) if its parent dies, so a
killed test run leaves no server behind.

From a shell: `python -m regtest.postgres run -- CMD ARGS…` runs CMD with
BITCACHE_TEST_DATABASE_URL naming a fresh server, and stops the server after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from regtest.process import free_port

# The server that test gateways and the store tests use when set (an admin URL: tests make
# one database per gateway on it); when unset, the tests start a server of their own.
URL_ENV = "BITCACHE_TEST_DATABASE_URL"
T = TypeVar("T")
PACKAGE_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
_PR_SET_PDEATHSIG = 1
_SETTINGS = (
    "listen_addresses=127.0.0.1",
    # A test server: losing its data in a crash costs nothing, speed does.
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)


class PostgresError(Exception):
    """PostgreSQL is not installed and cannot be, or the server would not start."""


def bin_dir() -> Path | None:
    """The newest installed server's bin dir (/usr/lib/postgresql/N/bin), if any."""
    found = sorted(
        (p.parent for p in PACKAGE_ROOT.glob("*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def ensure_installed() -> Path:
    """The server's bin dir, installing Debian's `postgresql` package first if needed."""
    found = bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresError("PostgreSQL is not installed: apt-get install postgresql")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PostgresError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    found = bin_dir()
    if found is None:
        raise PostgresError(f"installed postgresql, but no {PACKAGE_ROOT}/*/bin/initdb")
    return found


def _as_server_user() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise PostgresError(f"no {SERVER_USER!r} user (the postgresql package makes it)") from exc
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _die_with_parent() -> None:  # in the child, after the uid change (which would clear it)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


@dataclass
class PostgresServer:
    """A running throwaway server; `url()` names a database on it."""

    root: Path  # the data dir and the socket dir
    port: int
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends sessions
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start(timeout_s: float = 60.0) -> PostgresServer:
    """A fresh server on a free loopback port; raises PostgresError if it does not come up."""
    binaries = ensure_installed()
    drop = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="bitcache-pg-"))
    if drop:
        os.chown(root, drop["user"], drop["group"])
    data = root / "data"
    try:
        initdb = subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", SERVER_USER, "-N"],
            capture_output=True,
            text=True,
            check=False,
            **drop,
        )
        if initdb.returncode != 0:
            raise PostgresError(f"initdb failed: {initdb.stderr[-2000:]}")
        port = free_port()
        argv = [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root)]
        for setting in _SETTINGS:
            argv += ["-c", setting]
        with open(root / "server.log", "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **drop,
            )
        server = PostgresServer(root, port, process)
        _wait_ready(server, binaries, timeout_s)
    except BaseException:
        with contextlib.suppress(NameError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def _wait_ready(server: PostgresServer, binaries: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            log = (server.root / "server.log").read_text(errors="replace")[-2000:]
            raise PostgresError(f"postgres exited with {server.process.returncode}: {log}")
        ready = subprocess.run(
            [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(server.port)],
            check=False,
        )
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise PostgresError(f"postgres not ready on port {server.port} after {timeout_s} s")
        time.sleep(0.1)


def database_url(server_url: str, database: str) -> str:
    """``server_url`` with its database replaced by ``database``."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + database))


async def create_database(server_url: str, database: str) -> str:
    """Creates ``database`` on the server unless it exists; its URL."""
    import asyncpg  # only the PostgreSQL set-up needs it

    if not database.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {database!r}")
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a parallel creator
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return database_url(server_url, database)


async def create_schema(database_url: str) -> str:
    """A new empty schema in the database; the URL whose connections use it (asyncpg
    passes unknown URL parameters on to the server as settings, here search_path)."""
    import asyncpg

    schema = "t_" + secrets.token_hex(8)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return f"{database_url}?search_path={schema}"


def run_sync(call: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine for synchronous callers, even inside a running event loop (in a
    thread of its own with its own loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call).result()


def _run(argv: list[str]) -> int:
    server = start()
    try:
        env = dict(os.environ, **{URL_ENV: server.url()})
        print(f"PostgreSQL {server.url()} (in {server.root})", file=sys.stderr, flush=True)
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regtest.postgres", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help=f"run a command with {URL_ENV} set to a fresh server")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("run needs a command")
    try:
        return _run(cmd)
    except PostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
