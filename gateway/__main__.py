"""`python -m gateway --config gateway.json` runs the gateway until SIGTERM or SIGINT.

On either signal aiohttp's graceful shutdown closes the listening socket at once (new
connections are refused) and lets the requests in flight finish, a download to its last
byte, for up to `shutdown_timeout_s`, and (within the same deadline) for the tail of each
response to leave its transport's write buffer (gateway/http/flush.py); then the app stops
its background work and hands its invoice-stream leases to the other processes, and the
process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from gateway.app import create_app
from gateway.config import ConfigError, load_config
from gateway.server import ACCESS_LOG_FORMAT

log = logging.getLogger("bitcache.gateway")


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
    app = create_app(config)

    async def draining(_app: web.Application) -> None:
        log.info(
            "stopping: new connections refused, draining requests in flight (up to %g s)",
            config.shutdown_timeout_s,
        )

    app.on_shutdown.append(draining)  # runs once the listening socket is closed
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        shutdown_timeout=config.shutdown_timeout_s,
        # aiohttp closes a connection that has not sent a whole request head by then.
        keepalive_timeout=config.header_timeout_s,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
