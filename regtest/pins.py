"""The pinned versions of the Go-built tools, in one place."""

from __future__ import annotations

import hashlib
from pathlib import Path

LND_VERSION = "v0.21.2-beta"
# btcd is whatever lnd's go.mod requires: the wrapper module in gomod/ decides it.
KUBO_VERSION = "v0.42.0"
MIN_GO = (1, 26, 4)  # kubo v0.42 needs Go >= 1.26.4; lnd needs >= 1.25.10

LND_BUILD_TAGS = "signrpc walletrpc chainrpc invoicesrpc peersrpc routerrpc"

GOMOD_DIR = Path(__file__).parent / "gomod"
BINARIES = ("btcd", "btcctl", "lnd", "lncli", "ipfs")


def pins_digest() -> str:
    """A short digest of everything that decides the binaries, to key the cache."""
    h = hashlib.sha256()
    h.update(f"{LND_VERSION} {KUBO_VERSION} {LND_BUILD_TAGS}".encode())
    for name in ("go.mod", "go.sum", "tools.go"):
        path = GOMOD_DIR / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]
