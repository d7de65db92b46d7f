"""What every handler needs, built once at start-up and stored on the app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.accounts import AccountStore
from gateway.config import GatewayConfig
from gateway.db import Database
from gateway.files import FileStore
from gateway.settlement import Settlement
from gateway.tokens import TokenService
from gateway.unpinner import Unpinner
from gateway.withdrawals import Withdrawals
from lightning.lnd import LndRestClient
from storage.kubo import KuboClient


@dataclass
class Services:
    config: GatewayConfig
    db: Database
    files: FileStore
    tokens: TokenService
    kubo: KuboClient
    lnd: LndRestClient
    accounts: AccountStore
    settlement: Settlement
    withdrawals: Withdrawals
    unpinner: Unpinner


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
