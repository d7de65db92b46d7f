"""The regtest set-up that needs no processes: pins, the cluster config, the macaroon list."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from regtest import build, pins
from regtest.cluster import _localise, json_values
from regtest.kubo import KuboNode
from regtest.lnd_admin import GATEWAY_PERMISSIONS
from regtest.network import router_fee_msat
from regtest.process import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_exactly_the_permissions_the_network_bakes() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"lncli bakemacaroon ([a-z:\s]+)`", readme)
    assert match, "README has no bakemacaroon line"
    listed = {tuple(p.split(":")) for p in match.group(1).split()}
    assert listed == set(GATEWAY_PERMISSIONS)


def test_cluster_module_requires_the_pinned_version() -> None:
    assert build._pinned_cluster_version() == pins.CLUSTER_VERSION


def test_cluster_cache_key_changes_with_the_pin_but_not_the_lnd_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lnd_dir, cluster_dir = build.bin_dir(), build.cluster_bin_dir()
    assert lnd_dir != cluster_dir
    monkeypatch.setattr(pins, "CLUSTER_VERSION", "v1.1.7")
    assert build.cluster_bin_dir() != cluster_dir
    assert build.bin_dir() == lnd_dir  # a cluster bump never rebuilds lnd and kubo


def test_cluster_build_refuses_a_go_mod_that_disagrees_with_the_pin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(build, "CLUSTER_VERSION", "v9.9.9")
    monkeypatch.setenv("BITCACHE_CACHE", str(tmp_path))
    with pytest.raises(build.BuildError, match=r"v9\.9\.9"):
        build.build_cluster()


def test_cluster_config_is_private_and_on_loopback(tmp_path: Path) -> None:
    cfg: dict[str, Any] = {
        "cluster": {"listen_multiaddress": ["/ip4/0.0.0.0/tcp/9096"], "mdns_interval": "10s"},
        "api": {
            "restapi": {"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/9094"},
            "ipfsproxy": {"listen_multiaddress": "/ip4/127.0.0.1/tcp/9095"},
            "pinsvcapi": {"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/9097"},
        },
        "ipfs_connector": {"ipfshttp": {"node_multiaddress": "/ip4/127.0.0.1/tcp/5001"}},
    }
    kubo = KuboNode(tmp_path, ManagedProcess("k", [], tmp_path / "log"))
    kubo.api_multiaddr = "/ip4/127.0.0.1/tcp/40001"

    _localise(cfg, kubo, "ab" * 32, 41000, 41001)

    assert cfg["cluster"]["secret"] == "ab" * 32
    assert cfg["cluster"]["mdns_interval"] == "0s"
    assert cfg["cluster"]["monitor_ping_interval"] == "2s"
    assert cfg["cluster"]["listen_multiaddress"] == ["/ip4/127.0.0.1/tcp/41000"]
    assert cfg["api"]["restapi"]["http_listen_multiaddress"] == "/ip4/127.0.0.1/tcp/41001"
    assert cfg["ipfs_connector"]["ipfshttp"]["node_multiaddress"] == kubo.api_multiaddr
    assert "0.0.0.0" not in repr(cfg)


def test_json_values_reads_streams_and_arrays() -> None:
    assert json_values('{"id": "a"}\n{"id": "b"}\n') == [{"id": "a"}, {"id": "b"}]
    assert json_values('[{"id": "a"}, {"id": "b"}]') == [{"id": "a"}, {"id": "b"}]
    assert json_values("") == []


def test_router_fee_is_lnds_formula() -> None:
    # base 1500 msat + 1000 ppm, rounded down
    assert router_fee_msat(0) == 1_500
    assert router_fee_msat(999) == 1_500
    assert router_fee_msat(1_000) == 1_501
    assert router_fee_msat(2_345_678) == 1_500 + 2_345
