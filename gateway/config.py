"""The gateway's one configuration object, validated once and passed down."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, ValidationError

from gateway.quota import Plan

GB = 1_000_000_000


def default_plans() -> list[Plan]:
    return [
        Plan(
            id="1tb-30d",
            name="1 TB for 30 days",
            quota_bytes=1_000 * GB,
            duration_s=30 * 86_400,
            price_msat=20_000_000,
        ),
        Plan(
            id="5tb-30d",
            name="5 TB for 30 days",
            quota_bytes=5_000 * GB,
            duration_s=30 * 86_400,
            price_msat=80_000_000,
        ),
    ]


class ConfigError(Exception):
    """The configuration file is missing a field or has a bad value."""


class LndSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rest_url: str
    tls_cert: Path
    macaroon: Path
    # Invoices live this long; a token stays usable for token_ttl_s after minting.
    invoice_expiry_s: int = Field(default=600, ge=60, le=86_400)


class TenantSettings(BaseModel):
    """What a brand decides: its free tier, its plans, its cut of every sale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    display_name: str = "Bitcache"
    free_quota_bytes: int = Field(default=100 * GB, ge=0)
    # The operator's share of each chunk sale, in basis points (1000 = 10 %).
    operator_fee_bps: int = Field(default=1_000, ge=0, le=10_000)
    plans: list[Plan] = Field(default_factory=default_plans)

    def plan(self, plan_id: str) -> Plan | None:
        return next((p for p in self.plans if p.id == plan_id), None)


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8402, ge=0, le=65_535)
    # The address users reach the gateway at, used in share links.
    public_url: HttpUrl | None = None
    data_dir: Path
    kubo_api_url: str
    lnd: LndSettings
    default_price_msat: int = Field(default=2_000, ge=0, le=100_000_000)
    token_ttl_s: int = Field(default=3_600, ge=60, le=7 * 86_400)
    max_range_chunks: int = Field(default=1_024, ge=1, le=100_000)
    tenant: TenantSettings = Field(default_factory=TenantSettings)
    # Withdrawals: the routing fee the gateway may spend, held from the balance up front.
    withdrawal_fee_limit_bps: int = Field(default=50, ge=0, le=10_000)
    withdrawal_min_fee_msat: int = Field(default=1_000, ge=0)
    # Bearer token for the operator report; no report endpoint when unset.
    operator_token: SecretStr | None = None
    # Pending withdrawals are reconciled and deleted chunks unpinned this often.
    maintenance_interval_s: float = Field(default=30, gt=0)
    # How long a 503 asks clients to wait before retrying.
    retry_after_s: int = Field(default=5, ge=1, le=600)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "gateway.sqlite3"

    @property
    def token_secret_path(self) -> Path:
        return self.data_dir / "token-secret"

    def base_url(self) -> str:
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        return f"http://{self.host}:{self.port}"


def load_config(path: Path) -> GatewayConfig:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
