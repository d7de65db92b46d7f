"""The importer's reader process: `python -m gateway.identity.import_reader`.

Reads its job as one line of JSON on stdin (path, format, byte offset and line to start
from, tenant policies, the import's clock, batch size, staging directory), then parses the
file into batches (import_source) and writes each to a staging file (persistence/
import_stage), announcing it on stdout as a frame: an 8-byte big-endian length, then
`Staged.encode()`. An empty frame ends the stream; a frame starting with "!" carries an
error message instead. The importer acknowledges each batch it committed with one byte on
stdin; batch n + 2 is written only after batch n's acknowledgement, so at most two staging
files exist whatever the file size.

A plain subprocess rather than multiprocessing: it starts in a fraction of a second (no
re-import of the command's own modules), and when the importer dies, even by kill -9, the
next read or write here fails and this process removes the staging files and ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import orjson

from gateway.identity.import_source import TenantPolicy, read_batches
from gateway.persistence.import_stage import staged_batches

FRAME_HEADER = 8


class _ImporterGone(Exception):
    pass


def _write(frame: bytes) -> None:
    out = sys.stdout.buffer
    out.write(len(frame).to_bytes(FRAME_HEADER, "big"))
    out.write(frame)
    out.flush()


def _wait_for_ack() -> None:
    if not sys.stdin.buffer.read(1):
        raise _ImporterGone


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the importer's to handle
    job = orjson.loads(sys.stdin.buffer.readline())
    policies = {tenant: TenantPolicy(**fields) for tenant, fields in job["policies"].items()}
    stage_dir = Path(job["stage_dir"])
    try:
        try:
            batches = read_batches(
                Path(job["path"]),
                job["fmt"],
                job["offset"],
                job["line"],
                policies,
                job["now"],
                job["batch_rows"],
            )
            for staged in staged_batches(batches, stage_dir, _wait_for_ack):
                _write(staged.encode())
            _write(b"")
        except (BrokenPipeError, ConnectionResetError, _ImporterGone):
            raise
        except Exception as exc:
            _write(b"!" + f"{type(exc).__name__}: {exc}".encode())
    except (BrokenPipeError, ConnectionResetError, _ImporterGone):
        # The importer is gone: its staging files are ours to remove, nothing to flush.
        shutil.rmtree(stage_dir, ignore_errors=True)
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
