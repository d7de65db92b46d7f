"""The transfer progress display on stderr.

On a terminal, a `rich` progress bar (bytes, percentage, rate, ETA) redrawn at most ~10
times a second and removed at the end; elsewhere (logs, CI, a pipe) a plain line at every
10 %, so the output stays readable. Both end with one summary line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

__all__ = ["Progress", "format_bytes", "format_duration"]

_REDRAW_INTERVAL_S = 0.1
_MIB = 1 << 20


def format_bytes(n: int | float) -> str:
    """Human-readable binary size: ``512 B``, ``1.5 KiB``, ``12.3 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Bytes done of ``total``, percentage, rate and ETA.

    ``initial`` counts bytes already there (a resumed transfer): they count towards the
    percentage but not towards the rate.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str = "",
        initial: int = 0,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(0, total)
        self.done = min(max(0, initial), self.total)
        self._initial = self.done
        self._label = label
        self._quiet = quiet
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._last_draw = float("-inf")
        self._decile = self._percent() // 10
        self._closed = False
        try:
            self._tty = self._stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._bar: RichProgress | None = None
        if self._tty and not quiet:
            self._bar = self._start_bar()
            if self._quiet:  # the terminal refused the first draw
                self._bar = None

    def _start_bar(self) -> RichProgress:
        # Refreshed by update() (no background thread), timed by our clock; stdout and
        # stderr are left alone so other output is not captured.
        bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=self._stream),
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            get_time=self._clock,
        )
        self._task = bar.add_task(self._label, total=self.total or None, completed=self.done)
        self._draw(bar.start)
        return bar

    def _percent(self) -> int:
        return 100 if self.total == 0 else self.done * 100 // self.total

    def _rate(self) -> float:
        """Bytes per second over this session's bytes."""
        elapsed = self._clock() - self._start
        return (self.done - self._initial) / elapsed if elapsed > 0 else 0.0

    def _line(self) -> str:
        rate = self._rate()
        left = self.total - self.done
        eta = format_duration(left / rate) if rate > 0 else "--:--"
        pct = 100.0 if self.total == 0 else self.done * 100 / self.total
        prefix = f"{self._label}: " if self._label else ""
        return (
            f"{prefix}{format_bytes(self.done)} / {format_bytes(self.total)} "
            f"{pct:5.1f}%  {rate / _MIB:.2f} MiB/s  ETA {eta}"
        )

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._quiet = True  # stderr went away: keep transferring, stop drawing

    def update(self, n: int) -> None:
        """Count ``n`` more bytes done."""
        self.done = min(self.total, self.done + max(0, n))
        if self._quiet or self._closed:
            return
        if self._bar is not None:
            now = self._clock()
            self._bar.update(self._task, completed=self.done)
            if now - self._last_draw >= _REDRAW_INTERVAL_S or self.done == self.total:
                self._last_draw = now
                self._draw(self._bar.refresh)
        else:
            decile = self._percent() // 10
            if decile > self._decile:
                self._decile = decile
                self._write(self._line() + "\n")

    def _draw(self, action: Callable[[], None]) -> None:
        try:
            action()
        except (OSError, ValueError):
            self._quiet = True  # the terminal went away: keep transferring, stop drawing
            self._bar = None

    def close(self, ok: bool = True) -> None:
        """End the display; on success print a summary line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._draw(self._bar.stop)  # transient: the bar is erased
            self._bar = None
        if self._quiet:
            return
        if not ok:
            return
        elapsed = self._clock() - self._start
        moved = self.done - self._initial
        prefix = f"{self._label}: " if self._label else ""
        rate = f"{moved / elapsed / _MIB:.2f} MiB/s" if elapsed > 0 else "instant"
        self._write(
            f"{prefix}{format_bytes(self.done)} done; {format_bytes(moved)} transferred in "
            f"{format_duration(elapsed)} ({rate})\n"
        )
