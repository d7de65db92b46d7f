"""The gateway's one configuration object, validated once and passed down."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.billing.quota import Plan

GB = 1_000_000_000
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


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


class Brand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    primary_color: str = Field(default="#f7931a", pattern=r"^#[0-9a-fA-F]{6}$")
    background_color: str = Field(default="#ffffff", pattern=r"^#[0-9a-fA-F]{6}$")
    logo_url: str | None = Field(default=None, max_length=2048)


class ReplicationSettings(BaseModel):
    """How many IPFS Cluster peers pin each chunk: at least ``min`` (an upload fails with
    503 when fewer are up), up to ``max`` when that many are available."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(default=2, ge=1, le=100)
    max: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicationSettings:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max})")
        return self


class ClusterSettings(BaseModel):
    """An IPFS Cluster as the block store (``ipfs_backend: "cluster"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The cluster REST API (port 9094) of one or more peers: pins go to the first that answers.
    rest_urls: list[HttpUrl] = Field(min_length=1)
    # Every peer's kubo RPC API, read (offline) in turn after kubo_api_url's, so chunks
    # still download while a peer or its kubo is down.
    kubo_api_urls: list[HttpUrl] = Field(default_factory=list)
    # For tenants that set no replication of their own.
    replication: ReplicationSettings = Field(default_factory=ReplicationSettings)


class TenantSettings(BaseModel):
    """A brand on its own domains: its look, prices, free tier, plans, its cut of every
    sale, and optionally its own Lightning node (so its invoices and earnings are its own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    display_name: str = Field(default="Bitcache", min_length=1, max_length=100)
    # Host names (no port) this tenant answers on; "*" makes it the fallback for any host.
    hostnames: list[str] = Field(default_factory=lambda: ["*"])
    # Where its share links point; defaults to the scheme and host the request came in on.
    public_url: HttpUrl | None = None
    brand: Brand = Field(default_factory=Brand)
    # Price per chunk for new uploads when the uploader names none; the gateway's otherwise.
    default_price_msat: int | None = Field(default=None, ge=0, le=100_000_000)
    lnd: LndSettings | None = None
    free_quota_bytes: int = Field(default=100 * GB, ge=0)
    # All free-tier accounts (no active plan) together may store at most this; None: no cap.
    free_tier_total_bytes: int | None = Field(default=None, ge=0)
    # A price for opening an account, paid over Lightning (L402); 0: accounts are free.
    signup_price_msat: int = Field(default=0, ge=0, le=100_000_000_000)
    # The operator's share of each chunk sale, in basis points (1000 = 10 %).
    operator_fee_bps: int = Field(default=1_000, ge=0, le=10_000)
    plans: list[Plan] = Field(default_factory=default_plans)
    # Versions of each file a vault keeps (the newest N); older ones leave the tree.
    vault_keep_versions: int = Field(default=10, ge=1, le=1000)
    # Days a vault's trash keeps an entry before a sync pass purges it (None: until emptied).
    vault_trash_days: int | None = Field(default=30, ge=0, le=36500)
    # On an IPFS Cluster: how many peers pin this tenant's chunks (None: cluster.replication).
    replication: ReplicationSettings | None = None

    def plan(self, plan_id: str) -> Plan | None:
        return next((p for p in self.plans if p.id == plan_id), None)

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, names: list[str]) -> list[str]:
        cleaned = [n.strip().lower().rstrip(".") for n in names]
        for name in cleaned:
            if name != "*" and not _HOSTNAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a host name (no scheme, port or path)")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("a host name is listed twice")
        return cleaned


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8402, ge=0, le=65_535)
    # The address users reach the gateway at, for share links of tenants that name none.
    public_url: HttpUrl | None = None
    data_dir: Path
    # The database: a SQLite file (default: data_dir/gateway.sqlite3) or a PostgreSQL URL
    # (postgresql://user:password@host:port/dbname), which several gateway processes can
    # share. Never shown in repr() or logs: the URL may hold a password.
    database_url: str | None = Field(default=None, min_length=1, repr=False)
    # Connections each process keeps to PostgreSQL at most.
    database_pool_size: int = Field(default=10, ge=1, le=1_000)
    # This machine's kubo RPC API. With ipfs_backend "cluster" it is read first, and
    # pins go through the cluster (`cluster`) instead.
    kubo_api_url: str
    ipfs_backend: Literal["kubo", "cluster"] = "kubo"
    cluster: ClusterSettings | None = None
    lnd: LndSettings
    default_price_msat: int = Field(default=2_000, ge=0, le=100_000_000)
    token_ttl_s: int = Field(default=3_600, ge=60, le=7 * 86_400)
    max_range_chunks: int = Field(default=1_024, ge=1, le=100_000)
    # Prepaid credit (POST /v1/credit): the most one purchase may buy, and how long after
    # the purchase it can be spent. 0 msat turns credit off.
    credit_max_msat: int = Field(default=100_000_000, ge=0, le=100_000_000_000)
    credit_ttl_s: int = Field(default=30 * 86_400, ge=60, le=366 * 86_400)
    # The brands served. A tenants_file, when set, replaces this list and is re-read
    # whenever it changes, so tenants are added or edited without a restart.
    tenants: list[TenantSettings] = Field(default_factory=lambda: [TenantSettings()])
    tenants_file: Path | None = None
    # Only behind a proxy that sets it: otherwise a client could pick another tenant.
    trust_forwarded_host: bool = False
    # Proxies in front of the gateway that append to X-Forwarded-For. The client is the
    # rightmost hop they did not write; 0 (no proxy) uses the connection's address.
    trusted_proxies: int = Field(default=0, ge=0, le=10)
    # Withdrawals: the routing fee the gateway may spend, held from the balance up front.
    withdrawal_fee_limit_bps: int = Field(default=50, ge=0, le=10_000)
    withdrawal_min_fee_msat: int = Field(default=1_000, ge=0)
    # A withdrawal still in flight after this long is answered 202 (pending) and followed on.
    withdrawal_answer_within_s: float = Field(default=20, gt=0, le=300)
    # Bearer token for the operator report; no report endpoint when unset.
    operator_token: SecretStr | None = None
    # New invoices (402 challenges, plan purchases) per client IP: a burst, then a rate.
    # Paid downloads need a few per file, so this only stops a client flooding the node.
    invoice_burst: int = Field(default=200, ge=1)
    invoice_rate_per_s: float = Field(default=20.0, gt=0)
    # New accounts (or signup invoices) per client, and per tenant: a burst, then a rate.
    signup_client_burst: int = Field(default=60, ge=1)
    signup_client_rate_per_s: float = Field(default=0.1, gt=0)
    signup_tenant_burst: int = Field(default=600, ge=1)
    signup_tenant_rate_per_s: float = Field(default=1.0, gt=0)
    # Login attempts (POST /v1/login) per client and per username: a burst, then a rate.
    # A username's bucket is what stops a password being guessed from many addresses.
    login_client_burst: int = Field(default=30, ge=1)
    login_client_rate_per_s: float = Field(default=0.2, gt=0)
    login_user_burst: int = Field(default=10, ge=1)
    login_user_rate_per_s: float = Field(default=1 / 60, gt=0)
    # Pending withdrawals are reconciled and deleted chunks unpinned this often.
    maintenance_interval_s: float = Field(default=30, gt=0)
    # LND's invoice stream is renewed after this long without a message: a connection
    # that died silently (half-open, a TLS record cut short) would otherwise wait forever.
    lnd_stream_idle_s: float = Field(default=60, ge=1, le=3_600)
    # The longest a long-poll (GET /v1/vault/changes?wait=S) is held open.
    long_poll_max_s: int = Field(default=55, ge=1, le=300)
    # Slow clients: a connection must send a complete request head within this (also the
    # idle keep-alive limit), and a request body must arrive whole within that.
    header_timeout_s: float = Field(default=15.0, gt=0, le=3_600)
    body_timeout_s: float = Field(default=60.0, gt=0, le=3_600)
    # Bytes of request bodies held in memory at once (a chunk is up to 16 MiB); a request
    # whose body does not fit → 503.
    max_buffered_body_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    # How long a 503 asks clients to wait before retrying.
    retry_after_s: int = Field(default=5, ge=1, le=600)
    # GET /metrics (Prometheus) without credentials; otherwise it needs operator_token.
    metrics_public: bool = False
    # Several gateway processes on one database: one follows each LND node's invoice
    # stream, under a lease renewed every third of this; when its holder dies, another
    # process takes the stream over within this long (plus a third).
    stream_lease_s: float = Field(default=10, ge=1, le=600)
    # On SIGTERM: refuse new connections, then let requests in flight (downloads) finish
    # for up to this long before exiting. A long-poll holds on until then too. Not 0:
    # aiohttp reads a zero timeout as none at all.
    shutdown_timeout_s: float = Field(default=30, gt=0, le=3_600)

    @model_validator(mode="after")
    def _unique_tenants(self) -> GatewayConfig:
        check_tenants(self.tenants)
        return self

    @model_validator(mode="after")
    def _cluster_named(self) -> GatewayConfig:
        if self.ipfs_backend == "cluster" and self.cluster is None:
            raise ValueError('ipfs_backend "cluster" needs the cluster settings (rest_urls)')
        return self

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        if url is None or url.startswith(_POSTGRES_SCHEMES):
            return url
        if "://" in url:  # neither a path nor PostgreSQL; do not echo it (a password?)
            raise ValueError("must be a SQLite file path or a postgresql:// URL")
        return url

    @property
    def uses_postgres(self) -> bool:
        return self.database_url is not None and self.database_url.startswith(_POSTGRES_SCHEMES)

    @property
    def database(self) -> str | Path:
        """Where the database is: a postgresql:// URL or the SQLite file's path."""
        if self.uses_postgres:
            assert self.database_url is not None
            return self.database_url
        return self.database_path

    @property
    def database_path(self) -> Path:
        """The SQLite file; there is none when the database is PostgreSQL."""
        if self.uses_postgres:
            raise ValueError("the database is PostgreSQL, not a SQLite file")
        if self.database_url is not None:
            return Path(self.database_url).expanduser()
        return self.data_dir / "gateway.sqlite3"

    @property
    def token_secret_path(self) -> Path:
        return self.data_dir / "token-secret"


def validation_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


def check_tenants(tenants: list[TenantSettings]) -> None:
    """Ids and host names must be unique across tenants; raises ValueError."""
    seen_ids: set[str] = set()
    seen_hosts: dict[str, str] = {}
    for tenant in tenants:
        if tenant.id in seen_ids:
            raise ValueError(f"tenant id {tenant.id!r} is used twice")
        seen_ids.add(tenant.id)
        for host in tenant.hostnames:
            if host in seen_hosts:
                raise ValueError(
                    f"host {host!r} belongs to both {seen_hosts[host]!r} and {tenant.id!r}"
                )
            seen_hosts[host] = tenant.id
    if not tenants:
        raise ValueError("at least one tenant is needed")


def load_config(path: Path) -> GatewayConfig:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    try:
        config = GatewayConfig.model_validate(raw)
        check_tenants(config.tenants)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config
