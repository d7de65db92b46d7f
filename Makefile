# The two commands a fresh machine needs: `make sandbox` and `make test`.
# Each installs what it needs first (idempotent): Python packages, then the Go-built
# btcd, lnd and kubo into ~/.cache/bitcache (built once per version pin).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: sandbox test unit lint tools bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

tools: $(STAMP)
	$(PY) -m regtest build

sandbox: tools
	$(VENV)/bin/bitcache sandbox

test: tools
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy storage gateway client lightning regtest

bench: tools
	$(PY) -m bench.download

clean:
	rm -rf $(VENV)
