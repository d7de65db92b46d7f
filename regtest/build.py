"""Builds btcd, lnd and kubo (and, on demand, IPFS Cluster) from Go modules into a cache.

Built once per set of pins (see pins.py) and reused; progress goes to stderr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from regtest.pins import (
    BINARIES,
    CLUSTER_BINARIES,
    CLUSTER_GOMOD_DIR,
    CLUSTER_MODULE,
    CLUSTER_VERSION,
    GOMOD_DIR,
    KUBO_VERSION,
    LND_BUILD_TAGS,
    MIN_GO,
    cluster_pins_digest,
    pins_digest,
)


class BuildError(RuntimeError):
    """A tool could not be built; the message says what to do."""


def cache_root() -> Path:
    base = os.environ.get("BITCACHE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bitcache"
    )
    return Path(base)


def bin_dir() -> Path:
    """Where the binaries for the current pins live (may not exist yet)."""
    return cache_root() / f"bin-{pins_digest()}"


def binaries_ready(directory: Path | None = None) -> bool:
    directory = directory or bin_dir()
    return all((directory / name).is_file() for name in BINARIES)


def cluster_bin_dir() -> Path:
    """Where ipfs-cluster-service and ipfs-cluster-ctl for the current pins live."""
    return cache_root() / f"cluster-{cluster_pins_digest()}"


def _check_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"Go is not installed: install Go >= {'.'.join(map(str, MIN_GO))} (go.dev or your "
            "package manager) so that btcd, lnd and kubo can be built."
        )
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", out)
    found = tuple(int(x or 0) for x in match.groups()) if match else (0, 0, 0)
    if found < MIN_GO:
        raise BuildError(
            f"Go {'.'.join(map(str, found))} is too old: install Go >= "
            f"{'.'.join(map(str, MIN_GO))} to build kubo {KUBO_VERSION} and lnd."
        )
    return go


def _run_go(label: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Runs a go build with -v and turns its package lines into a progress counter."""
    started = time.monotonic()
    tty = sys.stderr.isatty()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    packages = 0
    errors: list[str] = []
    for line in proc.stderr:
        line = line.rstrip()
        if line.startswith(("go: downloading", "go: finding")) or not line:
            continue
        if " " in line or line.startswith("#"):
            errors.append(line)  # compiler output, kept for the failure message
            continue
        packages += 1
        if tty:
            elapsed = time.monotonic() - started
            print(f"\r  {label}: {packages} packages, {elapsed:4.0f}s", end="", file=sys.stderr)
        elif packages % 100 == 0:
            print(f"  {label}: {packages} packages…", file=sys.stderr, flush=True)
    code = proc.wait()
    elapsed = time.monotonic() - started
    if tty:
        print(file=sys.stderr)
    if code != 0:
        tail = "\n".join(errors[-30:])
        raise BuildError(f"building {label} failed (exit {code}):\n{tail}")
    print(f"  {label}: built in {elapsed:.0f}s", file=sys.stderr, flush=True)


def _module_dir(go: str, module: str, env: dict[str, str]) -> Path:
    """Downloads a module into the module cache and returns its source directory."""
    proc = subprocess.run(
        [go, "mod", "download", "-json", module],
        capture_output=True,
        text=True,
        env=dict(env, GOFLAGS=""),
    )
    if proc.returncode != 0:
        raise BuildError(f"cannot download {module}: {proc.stdout[-500:]}{proc.stderr[-500:]}")
    return Path(json.loads(proc.stdout)["Dir"])


def build(force: bool = False) -> Path:
    """Builds the tools if the cache lacks them; returns the directory holding them."""
    target = bin_dir()
    if binaries_ready(target) and not force:
        return target
    go = _check_go()
    print(f"building regtest tools into {target} (once per version pin)", file=sys.stderr)
    total = time.monotonic()
    cache_root().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=cache_root()))
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    try:
        # Build from a copy of the wrapper module so the repo's go.sum is never rewritten.
        module = staging / "gomod"
        shutil.copytree(GOMOD_DIR, module)
        out = staging / "bin"
        out.mkdir()
        _run_go(
            "lnd, lncli, btcd, btcctl",
            [
                go,
                "build",
                "-v",
                "-trimpath",
                "-tags",
                LND_BUILD_TAGS,
                "-o",
                str(out) + "/",
                "github.com/lightningnetwork/lnd/cmd/lnd",
                "github.com/lightningnetwork/lnd/cmd/lncli",
                "github.com/btcsuite/btcd",
                "github.com/btcsuite/btcd/cmd/btcctl",
            ],
            module,
            env,
        )
        # kubo's go.mod has exclude directives, so `go install kubo@version` refuses too;
        # its own module (from the module cache, go.sum included) builds as the main one.
        kubo_src = _module_dir(go, f"github.com/ipfs/kubo@{KUBO_VERSION}", env)
        _run_go(
            f"kubo {KUBO_VERSION}",
            [go, "build", "-v", "-trimpath", "-o", str(out / "ipfs"), "./cmd/ipfs"],
            kubo_src,
            dict(env, GOFLAGS="-mod=readonly"),
        )
        missing = [name for name in BINARIES if not (out / name).is_file()]
        if missing:
            raise BuildError(f"build finished but {', '.join(missing)} is missing")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)  # atomic: a half-built cache is never taken for a built one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"regtest tools ready in {time.monotonic() - total:.0f}s", file=sys.stderr)
    return target


def _pinned_cluster_version() -> str:
    """The ipfs-cluster version the committed go.mod requires (it must match the pin)."""
    text = (CLUSTER_GOMOD_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(CLUSTER_MODULE)} (v\S+)", text, re.MULTILINE)
    return match.group(1) if match else ""


def build_cluster(force: bool = False) -> Path:
    """Builds ipfs-cluster-service and -ctl if the cache lacks them; returns their directory.

    `go install …@v1.1.6` needs the proxy's version list, which is refused here; the
    committed scratch module (made with `go get -tool` of both commands) builds them
    the ordinary way instead.
    """
    target = cluster_bin_dir()
    if all((target / name).is_file() for name in CLUSTER_BINARIES) and not force:
        return target
    found = _pinned_cluster_version()
    if found != CLUSTER_VERSION:
        raise BuildError(
            f"{CLUSTER_GOMOD_DIR}/go.mod requires ipfs-cluster {found or 'nothing'}, but "
            f"pins.py says {CLUSTER_VERSION}: run `go get -tool {CLUSTER_MODULE}/cmd/"
            f"ipfs-cluster-service@{CLUSTER_VERSION}` (and -ctl) there."
        )
    go = _check_go()
    print(f"building IPFS Cluster {CLUSTER_VERSION} into {target} (once per pin)", file=sys.stderr)
    total = time.monotonic()
    cache_root().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="build-cluster-", dir=cache_root()))
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    try:
        module = staging / "gomod"
        shutil.copytree(CLUSTER_GOMOD_DIR, module)  # the repo's go.sum is never rewritten
        out = staging / "bin"
        out.mkdir()
        _run_go(
            f"ipfs-cluster {CLUSTER_VERSION}",
            [go, "build", "-v", "-trimpath", "-o", str(out) + "/"]
            + [f"{CLUSTER_MODULE}/cmd/{name}" for name in CLUSTER_BINARIES],
            module,
            env,
        )
        missing = [name for name in CLUSTER_BINARIES if not (out / name).is_file()]
        if missing:
            raise BuildError(f"build finished but {', '.join(missing)} is missing")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"IPFS Cluster tools ready in {time.monotonic() - total:.0f}s", file=sys.stderr)
    return target
