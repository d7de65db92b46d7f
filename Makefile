# The two commands a fresh machine needs: `make sandbox` and `make test`.
# Each installs what it needs first (idempotent): Python packages, then the Go-built
# btcd, lnd and kubo into ~/.cache/bitcache (built once per version pin).
# `make test-scale` runs the integration suite again on the scale-out set-up.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: sandbox test test-scale unit lint tools web browser postgres bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

tools: $(STAMP)
	$(PY) -m regtest build

# The browser app: front-end packages come from the npm registry at build time (never
# committed) and are bundled into gateway/static, which the gateway serves.
WEB_STAMP := web/node_modules/.installed
$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(WEB_STAMP)

web: $(WEB_STAMP)
	cd web && npm run build

# Debian's Chromium drives the browser tests (Playwright's own browser download cannot
# work here); installed once.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Debian's PostgreSQL server binaries: the store tests run on it as well as on SQLite, and
# `make test-scale` runs the gateways on it. Tests start throwaway servers of their own
# (regtest/postgres.py); the cluster the package may start is not used.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

sandbox: tools web
	$(VENV)/bin/bitcache-sandbox

test: tools web browser postgres
	cd web && npm test
	$(PY) -m pytest -q

# The integration suite on the scale-out set-up. Each part is a wrapper that starts it and
# tells tests/conftest.py about it through an environment variable: regtest.postgres runs
# the command with BITCACHE_TEST_DATABASE_URL naming a fresh server, so every test gateway
# gets a PostgreSQL database instead of a SQLite file. Later parts chain in front of it.
SCALE_SETUP ?= $(PY) -m regtest.postgres run --

# BITCACHE_CLUSTER=1: the network adds a 3-peer IPFS Cluster, which the test gateways store in.
# Black-box tests get 3 gateway processes behind a round-robin proxy (tests/gateways.py).
test-scale: export BITCACHE_TEST_GATEWAYS = 3
test-scale: tools web browser postgres
	BITCACHE_CLUSTER=1 $(SCALE_SETUP) $(PY) -m pytest -q tests/integration

unit: $(STAMP) postgres
	$(PY) -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy storage l402 rest lightning ipfs gateway client sandbox regtest bench

# Each prints its figures beside baselines from the same run and merges them into
# bench/results.json; the network benches run the gateway as its own process.
bench: tools
	$(PY) -m bench.crypto
	$(PY) -m bench.tokens
	$(PY) -m bench.download
	$(PY) -m bench.processes

clean:
	rm -rf $(VENV)
