"""Client settings: the gateway, the Lightning node that pays, and spending limits.

Stored as JSON in ``$BITCACHE_CONFIG`` or ``~/.config/bitcache/client.json``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from client.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_GATEWAY_URL",
    "ClientConfig",
    "LndConnection",
    "atomic_write_private",
    "default_config_path",
    "load_config",
    "save_config",
]

CONFIG_ENV = "BITCACHE_CONFIG"
_tmp_counter = itertools.count()
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8402"


def _check_http_url(value: str, what: str) -> str:
    url = value.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} must start with http:// or https://")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError(f"{what} must not contain whitespace or control characters")
    if "?" in url or "#" in url:
        raise ValueError(f"{what} must not have a query or fragment")
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid URL: {exc}") from None
    if not host:
        raise ValueError(f"{what} has no host")
    return url


class LndConnection(BaseModel):
    """How to reach the LND node that pays for downloads (its REST API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rest_url: str
    tls_cert: Path
    macaroon: Path

    @field_validator("rest_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value, "rest_url")

    @field_validator("tls_cert", "macaroon")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class ClientConfig(BaseModel):
    """Everything the client needs; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_url: str = DEFAULT_GATEWAY_URL
    lnd: LndConnection | None = None
    # The account's API key (uploads need one; the owner downloads free). Sent only to
    # gateway_url, never to the gateway of a link from elsewhere.
    api_key: str | None = Field(default=None, repr=False)
    # Refuse to pay more than this per chunk, whatever the gateway asks.
    max_price_msat_per_chunk: int = Field(default=100_000, ge=0)
    # Routing-fee limit for each payment.
    max_fee_msat: int = Field(default=10_000, ge=0)
    # Chunks in flight at once (uploads and downloads; a download asking for runs has half
    # as many requests in flight, see run_chunks). 16: with the gateway's own process
    # between kubo and the client a chunk waits longer in the pipeline than on kubo alone,
    # and 8 left the two cores partly idle (bench: download 0.64-0.77 of kubo cat at
    # 16 in flight, 0.54-0.69 at 8, kubo cat itself at the same count).
    concurrency: int = Field(default=16, ge=1, le=256)
    # Chunks asked for in one request when the next ones are covered by the same token (or
    # free): the gateway's GET /v1/files/{id}/chunks?first=&last= sends them one after
    # another, saving per-request work on both sides. 1: one chunk per request.
    run_chunks: int = Field(default=4, ge=1, le=64)
    # Payments in flight at once while buying ahead (the ramp 1, 2, 4, … overlaps).
    purchase_concurrency: int = Field(default=3, ge=1, le=16)
    # Largest range bought with one payment.
    max_range_chunks: int = Field(default=64, ge=1, le=100_000)
    # Prepaid credit per gateway (0: none): bought when a paid download finds none held,
    # topped up in the background below a quarter of it, spent before any invoice is
    # paid, so a download's first byte waits for no payment. Kept in credit.json.
    credit_msat: int = Field(default=0, ge=0, le=100_000_000_000)

    @field_validator("gateway_url")
    @classmethod
    def _gateway(cls, value: str) -> str:
        # Share links are "<gateway>/f/<id>", so the base is kept without a trailing slash.
        return _check_http_url(value, "gateway_url")


def default_config_path() -> Path:
    """``$BITCACHE_CONFIG`` if set, else ``~/.config/bitcache/client.json``."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "bitcache" / "client.json"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def load_config(path: Path | None = None) -> ClientConfig:
    """Read the configuration; a missing file means all defaults."""
    path = path if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ClientConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None
    try:
        return ClientConfig.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def atomic_write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, rename), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Unique per writer, so two writers never clobber each other's temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_config(cfg: ClientConfig, path: Path | None = None) -> None:
    """Write the configuration atomically, readable by the owner only.

    Owner-only because the file points at a macaroon that can spend from the node.
    """
    path = path if path is not None else default_config_path()
    atomic_write_private(path, (cfg.model_dump_json(indent=2) + "\n").encode("utf-8"))
