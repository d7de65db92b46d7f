"""Choosing the block store: kubo stays the default, the cluster backend is validated, and
each tenant's uploads pin with the tenant's replication factor (gateway/blockstores.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.blockstores import open_block_store, tenant_stores
from gateway.config import GatewayConfig, TenantSettings
from ipfs.cluster import ClusterStore, Replication
from ipfs.kubo import KuboClient

CLUSTER = {
    "rest_urls": ["http://127.0.0.1:9094", "http://127.0.0.1:9194"],
    "kubo_api_urls": ["http://127.0.0.1:5101", "http://127.0.0.1:5201"],
}


def config(**overrides: Any) -> GatewayConfig:
    values: dict[str, Any] = {
        "data_dir": Path("/tmp/gw"),
        "kubo_api_url": "http://127.0.0.1:5001",
        "lnd": {"rest_url": "https://127.0.0.1:8080", "tls_cert": "c", "macaroon": "m"},
    }
    return GatewayConfig.model_validate(values | overrides)


async def test_kubo_is_the_default_and_tenants_share_its_one_store() -> None:
    cfg = config()
    assert cfg.ipfs_backend == "kubo" and cfg.cluster is None
    store = open_block_store(cfg)
    assert isinstance(store, KuboClient) and store.api_url == "http://127.0.0.1:5001"
    assert tenant_stores(store, cfg)(cfg.tenants[0]) is store
    await store.close()


async def test_the_cluster_backend_reads_this_machines_kubo_first() -> None:
    cfg = config(ipfs_backend="cluster", cluster=CLUSTER)
    store = open_block_store(cfg)
    assert isinstance(store, ClusterStore)
    assert store.replication == Replication(2, 3)  # the default: survives one peer's loss
    assert list(store._peers.kubos) == [
        "http://127.0.0.1:5001",
        "http://127.0.0.1:5101",
        "http://127.0.0.1:5201",
    ]
    assert store._peers.rest_urls == ["http://127.0.0.1:9094", "http://127.0.0.1:9194"]
    await store.close()


async def test_each_tenant_pins_with_its_own_replication_or_the_clusters() -> None:
    cfg = config(
        ipfs_backend="cluster",
        cluster=CLUSTER | {"replication": {"min": 1, "max": 2}},
        tenants=[
            {"id": "default"},
            {"id": "acme", "hostnames": ["acme.example"], "replication": {"min": 3, "max": 3}},
        ],
    )
    store = open_block_store(cfg)
    for_tenant = tenant_stores(store, cfg)
    default, acme = (for_tenant(t) for t in cfg.tenants)
    assert isinstance(default, ClusterStore) and isinstance(acme, ClusterStore)
    assert default.replication == Replication(1, 2)
    assert acme.replication == Replication(3, 3)
    assert store.replication == Replication(1, 2)  # a tenant's view leaves the store as it was
    await store.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {"ipfs_backend": "cluster"},  # no cluster settings
        {"ipfs_backend": "ceph", "cluster": CLUSTER},
        {"ipfs_backend": "cluster", "cluster": CLUSTER | {"rest_urls": []}},
        {"ipfs_backend": "cluster", "cluster": CLUSTER | {"rest_urls": ["not a url"]}},
        {"ipfs_backend": "cluster", "cluster": CLUSTER | {"replication": {"min": 3, "max": 2}}},
        {"ipfs_backend": "cluster", "cluster": CLUSTER | {"replication": {"min": 0, "max": 2}}},
        {"ipfs_backend": "cluster", "cluster": CLUSTER | {"replicas": 2}},
        {"tenants": [{"replication": {"min": 2, "max": 1}}]},
    ],
)
def test_bad_storage_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(**overrides)


def test_a_tenant_without_replication_says_none() -> None:
    assert TenantSettings().replication is None
