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

# IPFS Cluster is only needed for the scale-out tests, so it has its own module and its
# own cache directory: changing it never forces a rebuild of lnd and kubo.
CLUSTER_VERSION = "v1.1.6"
CLUSTER_MODULE = "github.com/ipfs-cluster/ipfs-cluster"
CLUSTER_GOMOD_DIR = Path(__file__).parent / "gomod-cluster"
CLUSTER_BINARIES = ("ipfs-cluster-service", "ipfs-cluster-ctl")


def pins_digest() -> str:
    """A short digest of everything that decides the binaries, to key the cache."""
    h = hashlib.sha256()
    h.update(f"{LND_VERSION} {KUBO_VERSION} {LND_BUILD_TAGS}".encode())
    for name in ("go.mod", "go.sum", "tools.go"):
        path = GOMOD_DIR / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cluster_pins_digest() -> str:
    """The same for the IPFS Cluster tools: their version and their module's go.mod/go.sum."""
    h = hashlib.sha256()
    h.update(f"{CLUSTER_MODULE} {CLUSTER_VERSION}".encode())
    for name in ("go.mod", "go.sum"):
        h.update((CLUSTER_GOMOD_DIR / name).read_bytes())
    return h.hexdigest()[:16]
