"""Timing the calls a REST adapter makes, for whoever wants to count them.

The LND and kubo clients take an optional ``observe(call, seconds, ok)`` callback and
report every call through it: the gateway turns the reports into Prometheus metrics, while
the adapters stay free of any metrics library (and of the gateway). ``call`` is a short,
fixed name (never a URL with a payment hash or a CID in it), so it can be a label.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["CallObserver", "call_name", "observed"]

CallObserver = Callable[[str, float, bool], None]
"""``observe(call, seconds, ok)``: one finished call, how long it took, whether it worked."""

# A path segment that is part of the API's vocabulary: a version ("v1") or a short
# lowercase word. Payment hashes (hex or base64), CIDs and invoices are all longer than
# 24 characters, so the name stops before any of them.
_WORD = re.compile(r"^(v\d+|[a-z_]{1,24})$")


def call_name(method: str, path: str) -> str:
    """``GET /v1/invoice`` for ``GET /v1/invoice/<hash>?x=1``: the path's leading words."""
    words = []
    for segment in path.split("?", 1)[0].strip("/").split("/"):
        if not _WORD.match(segment):
            break
        words.append(segment)
    return f"{method} /{'/'.join(words)}"


@contextmanager
def observed(
    observe: CallObserver | None, call: str, failures: tuple[type[BaseException], ...]
) -> Iterator[None]:
    """Reports the block as one call: failed if it raised one of ``failures``.

    Anything else that ends the block early (the caller stopped reading a stream, a task
    was cancelled) is not the remote side failing, so it counts as a call that worked."""
    if observe is None:
        yield
        return
    start = time.monotonic()
    ok = True
    try:
        yield
    except failures:
        ok = False
        raise
    finally:
        observe(call, time.monotonic() - start, ok)
