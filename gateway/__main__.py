"""`python -m gateway --config gateway.json` runs the gateway."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from gateway.app import create_app
from gateway.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="gateway JSON config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        # aiohttp closes a connection that has not sent a whole request head by then.
        keepalive_timeout=config.header_timeout_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
