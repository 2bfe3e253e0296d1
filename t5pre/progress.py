"""Progress lines in one style for every long-running command (training, ``data cache``,
``vocab train``): ``|``-separated parts, counts with thousands separators, rates as ``12.3k``,
durations as ``3m12s``, and an ETA measured on the work this process has done.

Plain Python (no TensorFlow), so every layer may use it.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional


def fmt_duration(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``; ``?`` when unknown (NaN, infinite)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_rate(x: float) -> str:
    """``950``, ``12.3k``, ``4.5M``."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


class Eta:
    """Seconds left, from the rate of the units (steps, documents) done *in this process*.

    The first unit this process completes is left out of the rate: it carries the tracing /
    compilation (and, after a resume, restoring) that later units do not repeat, and counting
    it inflated the first ETA after a resume several times over. So :meth:`seconds_left` is the
    wall time from the end of the first unit to the latest one, per unit, times the units left
    (NaN, shown ``?``, until two units are done). Checkpoints and evaluations between the units
    are part of the rate, as they will be of the time left.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._first: Optional[tuple] = None  # (done, time) when the first unit ended
        self._last: Optional[tuple] = None

    def mark(self, done: float, now: Optional[float] = None) -> None:
        """Record that ``done`` units (a running total, e.g. the global step) are complete."""
        point = (done, self._clock() if now is None else now)
        if self._first is None:
            self._first = point
        self._last = point

    def seconds_per_unit(self) -> float:
        if self._first is None or self._last[0] <= self._first[0]:
            return math.nan
        return (self._last[1] - self._first[1]) / (self._last[0] - self._first[0])

    def seconds_left(self, total: float) -> float:
        if self._last is None:
            return math.nan
        return max(total - self._last[0], 0) * self.seconds_per_unit()


class Throttle:
    """Lets a progress line through at most every ``every`` seconds (the first one after
    ``every`` seconds too, so that a quick command prints no progress at all)."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self._clock = clock
        self.started = clock()
        self._next = self.started + every

    def due(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.every
        return True

    def elapsed(self) -> float:
        return self._clock() - self.started


class Heartbeat:
    """While the ``with`` block runs, calls ``line()`` every ``every`` seconds in a daemon
    thread and logs what it returns (None: nothing). For work that runs in native code and
    reports nothing itself (SentencePiece training releases the GIL while it trains)."""

    def __init__(self, line: Callable[[], Optional[str]], log: Callable[[str], None],
                 every: float):
        import threading

        self._line, self._log, self.every = line, log, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="t5pre-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            text = self._line()
            if text:
                self._log(text)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
