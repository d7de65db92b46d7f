"""Each tenant's Lightning node: one client per distinct connection, the gateway's by default."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from gateway.config import LndSettings, TenantSettings
from lightning.errors import LightningError
from lightning.lnd import LndRestClient
from lightning.node import LightningNode

__all__ = ["LightningNodes", "connection_key", "lnd_rest"]


def connection_key(settings: LndSettings) -> str:
    """What tells two connections apart: the URL and the credentials used on it. Two
    tenants may reach one URL with different macaroons (or certificates), and each must
    keep its own; the invoice expiry is not part of the connection."""
    url = settings.rest_url.rstrip("/")
    credentials = f"{settings.tls_cert}\0{settings.macaroon}".encode()
    # A digest, not the paths: the key appears in logs and in the database.
    return f"{url}#{hashlib.sha256(credentials).hexdigest()[:16]}"


def lnd_rest(settings: LndSettings) -> LightningNode:
    """The production connector: LND's REST API at ``settings.rest_url``."""
    return LndRestClient(settings.rest_url, settings.tls_cert, settings.macaroon)


class LightningNodes:
    """One client per distinct connection; tenants without a node use the gateway's.

    ``connect`` makes the client for a node's settings: LND's REST API in production, a
    FakeNode in in-process tests.
    """

    def __init__(
        self,
        default: LndSettings,
        connect: Callable[[LndSettings], LightningNode] = lnd_rest,
    ) -> None:
        self.default = default
        self._connect = connect
        self._clients: dict[str, LightningNode] = {}
        self._node_ids: dict[str, str] = {}

    def settings_for(self, tenant: TenantSettings | None) -> LndSettings:
        return tenant.lnd if tenant is not None and tenant.lnd is not None else self.default

    def client(self, settings: LndSettings) -> LightningNode:
        key = connection_key(settings)
        if key not in self._clients:
            self._clients[key] = self._connect(settings)
        return self._clients[key]

    def for_tenant(self, tenant: TenantSettings | None) -> LightningNode:
        return self.client(self.settings_for(tenant))

    async def node_id(self, settings: LndSettings) -> str:
        """The identity (pubkey) of the node behind a connection, asked once and then
        cached: it is recorded on every invoice issued through the connection, and the
        connection's invoice stream may book only those. LightningError if unreachable."""
        key = connection_key(settings)
        if key not in self._node_ids:
            pubkey = (await self.client(settings).get_info()).pubkey
            if not pubkey:
                raise LightningError(f"the node at {settings.rest_url} gave no identity")
            self._node_ids[key] = pubkey
        return self._node_ids[key]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
