"""The importer's reader process: `python -m gateway.identity.import_reader`.

Reads its job as JSON on stdin (path, format, byte offset and line to start from, tenant
policies, the import's clock, batch size), then writes the batches of import_source to
stdout as frames: an 8-byte big-endian length, then `Batch.encode()`. An empty frame ends
the stream; a frame starting with "!" carries an error message instead of a batch.

A plain subprocess rather than multiprocessing: it starts in a fraction of a second (no
re-import of the command's own modules), and when the importer dies, even by kill -9, the
next write here fails with a broken pipe and this process ends on its own.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import orjson

from gateway.identity.import_source import TenantPolicy, read_batches

FRAME_HEADER = 8


def _write(frame: bytes) -> None:
    out = sys.stdout.buffer
    out.write(len(frame).to_bytes(FRAME_HEADER, "big"))
    out.write(frame)
    out.flush()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the importer's to handle
    job = orjson.loads(sys.stdin.buffer.read())
    policies = {tenant: TenantPolicy(**fields) for tenant, fields in job["policies"].items()}
    try:
        try:
            for batch in read_batches(
                Path(job["path"]),
                job["fmt"],
                job["offset"],
                job["line"],
                policies,
                job["now"],
                job["batch_rows"],
            ):
                _write(batch.encode())
            _write(b"")
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:
            _write(b"!" + f"{type(exc).__name__}: {exc}".encode())
    except (BrokenPipeError, ConnectionResetError):
        # The importer is gone: nothing left to do, and nothing to flush at exit.
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
