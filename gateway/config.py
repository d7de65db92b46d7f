"""The gateway's one configuration object, validated once and passed down."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError


class ConfigError(Exception):
    """The configuration file is missing a field or has a bad value."""


class LndSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rest_url: str
    tls_cert: Path
    macaroon: Path
    # Invoices live this long; a token stays usable for token_ttl_s after minting.
    invoice_expiry_s: int = Field(default=600, ge=60, le=86_400)


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
