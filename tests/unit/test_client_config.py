"""client.config: defaults, validation, file location, atomic private saves; and the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from client.cli import main
from client.config import (
    ClientConfig,
    LndConnection,
    default_config_path,
    load_config,
    save_config,
)
from client.errors import ConfigError


def test_defaults() -> None:
    cfg = ClientConfig()
    assert cfg.gateway_url == "http://127.0.0.1:8402"
    assert cfg.lnd is None
    assert cfg.max_price_msat_per_chunk == 100_000
    assert cfg.max_fee_msat == 10_000
    assert cfg.concurrency == 16
    assert cfg.max_range_chunks == 64


def test_default_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BITCACHE_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config_path() == tmp_path / ".config" / "bitcache" / "client.json"
    monkeypatch.setenv("BITCACHE_CONFIG", str(tmp_path / "x.json"))
    assert default_config_path() == tmp_path / "x.json"


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.json") == ClientConfig()


def test_load_uses_env_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"concurrency": 3}))
    monkeypatch.setenv("BITCACHE_CONFIG", str(path))
    assert load_config().concurrency == 3


def test_round_trip_is_private_and_atomic(tmp_path: Path) -> None:
    cfg = ClientConfig(
        gateway_url="https://gw.example/bitcache/",
        lnd=LndConnection(
            rest_url="https://127.0.0.1:8080",
            tls_cert=Path("/n/tls.cert"),
            macaroon=Path("/n/admin.macaroon"),
        ),
        max_price_msat_per_chunk=5_000,
        concurrency=4,
    )
    assert cfg.gateway_url == "https://gw.example/bitcache"  # no trailing slash in links
    path = tmp_path / "sub" / "client.json"
    save_config(cfg, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path) == cfg
    save_config(cfg.model_copy(update={"concurrency": 2}), path)
    assert load_config(path).concurrency == 2
    assert [p.name for p in path.parent.iterdir()] == ["client.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "client.json: "),
        (json.dumps({"concurrency": 0}), "concurrency"),
        (json.dumps({"gateway_url": "ftp://x"}), "gateway_url"),
        (json.dumps({"gateway_url": "http://x/?a=1"}), "gateway_url"),
        (json.dumps({"bogus": 1}), "bogus"),
        (json.dumps({"lnd": {"rest_url": "https://h:8080", "tls_cert": "/c"}}), "lnd.macaroon"),
        (json.dumps({"max_fee_msat": -1}), "max_fee_msat"),
    ],
)
def test_invalid_file_names_file_and_field(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "client.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_lnd_paths_expand_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    lnd = LndConnection(rest_url="https://h:8080", tls_cert=Path("~/tls"), macaroon=Path("~/m"))
    assert lnd.tls_cert == tmp_path / "tls"


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "client.json"
    path.write_text(json.dumps({"concurrency": "many"}))
    link = "http://127.0.0.1:1/f/mrswmz3infvgw3dnnzxxa4lsom#" + "A" * 43
    assert main(["info", link, "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "concurrency" in err and "Traceback" not in err


def test_cli_reports_bad_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["get", "http://127.0.0.1:1/f/abc", "--config", str(tmp_path / "none.json")])
    assert code == 1
    assert "fragment" in capsys.readouterr().err


def test_cli_rejects_bad_price(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "f.bin"
    file.write_bytes(b"x")
    args = ["upload", str(file), "--price-sat", "0.0001", "--config", str(tmp_path / "c.json")]
    assert main(args) == 1
    assert "millisatoshi" in capsys.readouterr().err


def test_sandbox_command_becomes_python_m_sandbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The client never imports the sandbox (it sits above the gateway): it execs it."""
    calls: list[tuple[str, list[str]]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr("os.execv", fake_execv)
    config = str(tmp_path / "c.json")
    with pytest.raises(SystemExit):
        main(["sandbox", "--port", "9000", "--config", config])
    [(path, argv)] = calls
    assert argv == [path, "-m", "sandbox", "--port", "9000", "--config", config]
