"""`database_url` in the gateway config: SQLite by default (the same file as ever), a
path of one's choosing, or PostgreSQL; never echoed, since a URL may hold a password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import GatewayConfig, LndSettings, validation_problems
from gateway.persistence.database import open_database
from gateway.persistence.postgres import PostgresDatabase
from gateway.persistence.sqlite import SqliteDatabase

SECRET_URL = "postgresql://bitcache:hunter2-secret@db.internal:5432/bitcache"


def config(tmp_path: Path, **values: Any) -> GatewayConfig:
    lnd = LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m")
    return GatewayConfig(data_dir=tmp_path, kubo_api_url="http://127.0.0.1:9", lnd=lnd, **values)


def test_the_default_is_the_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    default = config(tmp_path)
    assert default.database_url is None and not default.uses_postgres
    assert default.database == default.database_path == tmp_path / "gateway.sqlite3"
    assert isinstance(open_database(default.database), SqliteDatabase)


def test_a_sqlite_path_of_ones_choosing(tmp_path: Path) -> None:
    chosen = config(tmp_path, database_url=str(tmp_path / "elsewhere.db"))
    assert chosen.database == chosen.database_path == tmp_path / "elsewhere.db"


def test_postgres_urls_and_their_secrecy(tmp_path: Path) -> None:
    pg = config(tmp_path, database_url=SECRET_URL)
    assert pg.uses_postgres and pg.database == SECRET_URL
    with pytest.raises(ValueError, match="PostgreSQL"):
        _ = pg.database_path
    db = open_database(pg.database)
    assert isinstance(db, PostgresDatabase)
    assert "hunter2" not in repr(pg) + repr(db)
    assert config(tmp_path, database_url="postgres://h/db").uses_postgres


def test_other_urls_are_refused_without_echoing_them(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        config(tmp_path, database_url="mysql://root:hunter2-secret@db/x")
    shown = validation_problems(refused.value)  # what load_config reports
    assert "database_url" in shown and "postgresql://" in shown
    assert "hunter2" not in shown
