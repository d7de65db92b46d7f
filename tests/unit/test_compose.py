"""docker/compose.yaml describes the scaled topology, and the config it gives the gateways
is one the gateway accepts (GatewayConfig) and that fits the services around it.

Parsed with PyYAML; Compose's ${VAR} interpolation is done here with test values, every
variable being one that docker/.env.example names. Nothing is started.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import GatewayConfig

DOCKER = Path(__file__).resolve().parents[2] / "docker"
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
ENV = {
    "BITCACHE_DOMAIN": "files.example.com",
    "POSTGRES_PASSWORD": "pw0123456789",
    "CLUSTER_SECRET": "ab" * 32,
    "BITCACHE_OPERATOR_TOKEN": "operator-token",
}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, and $$ for a dollar."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if env.get(name):
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op in (":-", "-") else ""

    return _VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def env_example() -> dict[str, str]:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def gateway_json(compose: dict[str, Any]) -> dict[str, Any]:
    """The config the gateway service mounts where its image reads it (the Dockerfile's
    ENTRYPOINT --config), interpolated and parsed."""
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert entrypoint is not None
    argv = json.loads(entrypoint.group(1))
    path = argv[argv.index("--config") + 1]
    [mount] = [c for c in compose["services"]["gateway"]["configs"] if c["target"] == path]
    content = compose["configs"][mount["source"]]["content"]
    return dict(json.loads(interpolate(content, ENV)))


def test_every_variable_is_in_the_env_example() -> None:
    used = set(_VARIABLE.findall((DOCKER / "compose.yaml").read_text()))
    assert {name for name, _, _ in used} == set(env_example()) == set(ENV)


def test_the_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "lnd", "gateway", "proxy"} <= set(services)
    # Three cluster peers, each with its own kubo, one shared secret.
    secrets = set()
    for i in range(3):
        peer, env = services[f"cluster{i}"], services[f"cluster{i}"]["environment"]
        assert services[f"kubo{i}"]["image"].startswith("ipfs/kubo:")
        assert peer["image"] == "ipfs/ipfs-cluster:v1.1.6"
        assert f"kubo{i}" in peer["depends_on"]
        kubo = f"/dns4/kubo{i}/tcp/5001"
        assert env["CLUSTER_IPFSHTTP_NODEMULTIADDRESS"] == env["CLUSTER_IPFSPROXY_NODEMULTIADDRESS"]
        assert env["CLUSTER_IPFSHTTP_NODEMULTIADDRESS"] == kubo
        assert env["CLUSTER_PEERNAME"] == f"cluster{i}"
        assert 2 <= int(env["CLUSTER_REPLICATIONFACTORMIN"])
        assert int(env["CLUSTER_REPLICATIONFACTORMIN"]) <= int(env["CLUSTER_REPLICATIONFACTORMAX"])
        assert int(env["CLUSTER_REPLICATIONFACTORMAX"]) <= 3
        secrets.add(env["CLUSTER_SECRET"])
    assert len(secrets) == 1
    # Gateway replicas behind the proxy, which alone is published.
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] >= 2
    assert "ports" not in gateway
    assert services["proxy"]["ports"]


def test_the_gateway_config_is_valid_and_fits_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    raw = gateway_json(compose)
    database_url = urlsplit(raw["database_url"])
    assert database_url.scheme == "postgresql" and database_url.hostname == "postgres"
    postgres = services["postgres"]["environment"]
    assert database_url.username == postgres["POSTGRES_USER"]
    assert database_url.path == "/" + postgres["POSTGRES_DB"]
    assert database_url.password == ENV["POSTGRES_PASSWORD"]
    if "database_url" not in GatewayConfig.model_fields:
        raw.pop("database_url")  # PostgreSQL support (branch pg) is not merged yet
    config = GatewayConfig.model_validate(raw)

    gateway = services["gateway"]
    assert config.host == "0.0.0.0"  # reachable by the proxy
    assert config.trust_forwarded_host  # the proxy sets X-Forwarded-Host
    assert config.operator_token is not None
    # It stores in the cluster: pins through every peer's REST API, at the port the peers
    # listen on, reads from every peer's kubo, and survives the loss of one peer.
    assert config.ipfs_backend == "cluster" and config.cluster is not None
    rest_port = services["cluster0"]["environment"]["CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS"]
    assert {(u.host, f"/tcp/{u.port}") for u in config.cluster.rest_urls} == {
        (f"cluster{i}", rest_port[rest_port.index("/tcp/") :]) for i in range(3)
    }
    kubos = [urlsplit(config.kubo_api_url)] + [
        urlsplit(str(u)) for u in config.cluster.kubo_api_urls
    ]
    assert [(k.hostname, k.port) for k in kubos] == [(f"kubo{i}", 5001) for i in range(3)]
    assert all(f"kubo{i}" in gateway["depends_on"] for i in range(3))
    assert config.cluster.replication.min >= 2
    assert urlsplit(config.lnd.rest_url).hostname in services
    # Files it reads are on volumes it mounts: LND's, and a data dir all replicas share.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
    assert mounts[str(config.data_dir)] in compose["volumes"]  # a named volume, shared
    for path in (config.lnd.tls_cert, config.lnd.macaroon):
        assert any(str(path).startswith(target + "/") for target in mounts), path
    assert mounts["/lnd"] == "lnd-data" and "lnd-data:/root/.lnd" in services["lnd"]["volumes"]
    # The proxy sends traffic to the port the gateway listens on.
    caddyfile = compose["configs"][services["proxy"]["configs"][0]["source"]]["content"]
    assert f"dynamic a gateway {config.port}" in caddyfile
    # Docker's SIGKILL comes after the drain's time is up.
    grace = re.fullmatch(r"(\d+)s", gateway["stop_grace_period"])
    assert grace is not None and int(grace.group(1)) > config.shutdown_timeout_s


def test_the_image_carries_every_package_the_gateway_imports() -> None:
    """The gateway's layers (docs/architecture.md): a package left out of the image would
    only fail when the container starts."""
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (DOCKER / "Dockerfile").read_text(), re.M))
    assert {"gateway", "storage", "l402", "lightning", "ipfs", "rest"} <= copied


def test_the_single_machine_example_config_is_valid() -> None:
    GatewayConfig.model_validate(json.loads((DOCKER / "gateway.example.json").read_text()))
    single = yaml.safe_load((DOCKER / "compose.single.yaml").read_text())
    assert {"gateway", "kubo", "lnd"} <= set(single["services"])
