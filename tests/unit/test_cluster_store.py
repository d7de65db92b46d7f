"""The pure parts of ipfs/cluster.py: replication factors, peer order, error mapping and
the cluster's answers. The store itself runs against a real cluster in
tests/integration/test_cluster_store.py."""

from __future__ import annotations

import json

import pytest

from ipfs.cluster import (
    ClusterStore,
    PeerHealth,
    Replication,
    added_cid,
    cluster_error,
    combined_error,
)
from ipfs.errors import IpfsError, IpfsNotFound, IpfsUnavailable


def test_replication_is_checked_and_becomes_the_cluster_options() -> None:
    assert Replication() == Replication(2, 3)
    assert Replication(1, 1).query() == {"replication-min": "1", "replication-max": "1"}
    for bad in ((0, 1), (3, 2), (-1, -1)):
        with pytest.raises(ValueError):
            Replication(*bad)


def test_unreachable_peers_go_last_until_the_cooldown_ends_or_they_answer() -> None:
    now = [100.0]
    health = PeerHealth(cooldown_s=30, clock=lambda: now[0])
    urls = ["a", "b", "c"]
    assert health.order(urls) == urls
    health.unreachable("a")
    health.unreachable("b")
    assert health.order(urls) == ["c", "a", "b"]  # configured order kept within each group
    health.answered("b")
    assert health.order(urls) == ["b", "c", "a"]
    now[0] += 30
    assert health.order(urls) == urls


def test_an_unreachable_peer_makes_the_whole_call_retryable() -> None:
    missing, down, broken = IpfsNotFound("m"), IpfsUnavailable("d"), IpfsError("b")
    assert type(combined_error("cat", [missing, missing])) is IpfsNotFound
    # The peer that is down may be the one holding the block: retry later, not 404/502.
    assert type(combined_error("cat", [missing, down])) is IpfsUnavailable
    assert type(combined_error("cat", [missing, broken])) is IpfsError
    assert type(combined_error("cat", [])) is IpfsUnavailable
    assert "m" in str(combined_error("cat", [missing, down]))


def test_cluster_errors_map_like_kubo_errors() -> None:
    def body(message: str, code: int = 500) -> bytes:
        return json.dumps({"code": code, "message": message}).encode()

    too_few = body("not enough peers to allocate CID. Needed at least: 4.")
    assert type(cluster_error("add", 500, too_few)) is IpfsUnavailable
    assert type(cluster_error("pin", 503, b"gateway down")) is IpfsUnavailable
    assert type(cluster_error("unpin", 404, body("pin is not part of the pinset", 404))) is (
        IpfsNotFound
    )
    refused = cluster_error("add", 400, body("parameter cid-version invalid", 400))
    assert type(refused) is IpfsError and "cid-version invalid" in str(refused)


def test_the_added_cid_is_the_last_output() -> None:
    answer = [
        {"name": "a", "cid": "bafyleaf", "size": 1},
        {"name": "chunk", "cid": "bafyroot", "size": 700158, "allocations": ["p1", "p2"]},
    ]
    assert added_cid(json.dumps(answer).encode()) == "bafyroot"
    for bad in (b"", b"[]", b'{"code": 500}', b"not json"):
        with pytest.raises(IpfsError):
            added_cid(bad)


def test_a_tenant_view_shares_the_connections_but_not_the_factor() -> None:
    store = ClusterStore(["http://c0:9094/"], ["http://k0:5001", "http://k0:5001"])
    view = store.replicated(Replication(3, 3))
    assert view.replication == Replication(3, 3) and store.replication == Replication(2, 3)
    assert view._peers is store._peers
    assert list(store._peers.kubos) == ["http://k0:5001"]  # listed twice, asked once
    with pytest.raises(ValueError):
        ClusterStore([], ["http://k0:5001"])
