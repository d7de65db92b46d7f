"""Which BlockStore the gateway stores chunks in, and each tenant's view of it.

``ipfs_backend`` "kubo" (the default) is one kubo node; "cluster" is an IPFS Cluster
(ipfs/cluster.py), whose pins carry a replication factor: the tenant's own, else the
cluster's default. On kubo a tenant's replication means nothing (one node, one copy).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import GatewayConfig, ReplicationSettings, TenantSettings
from ipfs.cluster import ClusterStore, Replication
from ipfs.kubo import KuboClient
from ipfs.store import BlockStore
from rest.observe import CallObserver

__all__ = ["TenantStores", "open_block_store", "tenant_stores"]

TenantStores = Callable[[TenantSettings], BlockStore]
"""The store a tenant's uploads go to."""


def open_block_store(config: GatewayConfig, observe: CallObserver | None = None) -> BlockStore:
    """The store ``config`` names (nothing is connected until first used)."""
    if config.ipfs_backend == "cluster":
        assert config.cluster is not None  # GatewayConfig checks it
        return ClusterStore(
            [str(u) for u in config.cluster.rest_urls],
            [config.kubo_api_url, *(str(u) for u in config.cluster.kubo_api_urls)],
            _replication(config.cluster.replication),
            observe=observe,
        )
    return KuboClient(config.kubo_api_url, observe=observe)


def tenant_stores(store: BlockStore, config: GatewayConfig) -> TenantStores:
    """Each tenant's store: on a cluster, ``store`` pinning with the tenant's replication."""
    if not isinstance(store, ClusterStore) or config.cluster is None:
        return lambda _tenant: store
    default = config.cluster.replication

    def for_tenant(tenant: TenantSettings) -> BlockStore:
        return store.replicated(_replication(tenant.replication or default))

    return for_tenant


def _replication(settings: ReplicationSettings) -> Replication:
    return Replication(settings.min, settings.max)
