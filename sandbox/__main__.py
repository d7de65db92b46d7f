"""`python -m sandbox` (also `bitcache-sandbox` and `bitcache sandbox`): run the sandbox."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from client.errors import ClientError
from sandbox.run import run

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bitcache-sandbox", description="run a local regtest sandbox"
    )
    parser.add_argument("--port", type=int, default=8402, help="gateway port (default 8402)")
    parser.add_argument(
        "--config", metavar="PATH", help="client config to write (default: the client's)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return run(args.port, Path(args.config).expanduser() if args.config else None)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
