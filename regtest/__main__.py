"""`python -m regtest build|up|down|status` — the regtest network from a terminal.

`up --router` adds the routing node (and `far_payer`), `up --cluster` a 3-peer IPFS
Cluster; `build --cluster` builds the IPFS Cluster tools too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from regtest.build import BuildError, build, build_cluster, cache_root
from regtest.network import Network, NetworkError


def default_state_file() -> Path:
    return cache_root() / "regtest-network.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _up(state_file: Path, router: bool, cluster: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Network.start(router=router, cluster=cluster) as net:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        net.write_description(state_file, supervisor_pid=os.getpid())
        print(json.dumps(net.describe(), indent=2))
        print(f"\nnetwork up in {net.ready_seconds:.1f}s; details in {state_file}", file=sys.stderr)
        print("Ctrl-C stops it.", file=sys.stderr)
        await stop.wait()
        print("stopping…", file=sys.stderr)
    state_file.unlink(missing_ok=True)


def _down(state_file: Path) -> int:
    if not state_file.exists():
        print("no regtest network is recorded as running", file=sys.stderr)
        return 0
    state = json.loads(state_file.read_text())
    pids = state.get("pids", {})
    supervisor = state.get("supervisor_pid")
    if supervisor and _alive(supervisor):
        # The `up` process stops its nodes cleanly and removes the state file.
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids.values():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    print(f"stopped {len(pids)} processes", file=sys.stderr)
    return 0


def _status(state_file: Path) -> int:
    if not state_file.exists():
        print("down")
        return 1
    desc = json.loads(state_file.read_text())
    pids = desc.get("pids", {})
    dead = [name for name, pid in pids.items() if not _alive(pid)]
    print(json.dumps(desc, indent=2))
    if dead:
        print(f"degraded: not running: {', '.join(dead)}", file=sys.stderr)
        return 1
    print("up", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regtest", description=__doc__)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--state-file", type=Path, default=default_state_file())
    parser.add_argument("--router", action="store_true", help="up: add the routing node")
    parser.add_argument("--cluster", action="store_true", help="up/build: IPFS Cluster too")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
            if args.cluster:
                print(build_cluster())
            return 0
        if args.command == "up":
            asyncio.run(_up(args.state_file, args.router, args.cluster))
            return 0
        if args.command == "down":
            return _down(args.state_file)
        return _status(args.state_file)
    except (BuildError, NetworkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
