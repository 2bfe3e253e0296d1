"""Progress lines of a cache build (``t5pre data cache``), in training's style
(:mod:`t5pre.progress`), counted across the build's worker processes::

    cache: 12,345 documents | 3,456,789 tokens | 45.6k tok/s | shards 1/4 done | 1m02s elapsed

The shard builders call :func:`count` as they write; the counts live in ``multiprocessing``
values that each worker receives from its pool's initializer (:func:`use`). There is no ETA:
how many documents a source holds is not known before it is read.
"""

from __future__ import annotations

import contextlib

EVERY = 10.0  # seconds between two progress lines
_counters = None  # this process's _Counters while a build with progress runs


class _Counters:
    """Documents, tokens (of the first feature) and finished shards."""

    def __init__(self, context):
        self.values = [context.Value("q", 0) for _ in range(3)]
        self.on_add = None  # a build in one process reports from here

    def add(self, documents: int, tokens: int, shards: int = 0) -> None:
        for value, amount in zip(self.values, (documents, tokens, shards)):
            with value.get_lock():
                value.value += amount
        if self.on_add is not None:
            self.on_add()

    def read(self) -> tuple:
        return tuple(v.value for v in self.values)

    def __getstate__(self):  # into a worker: the shared values, not the main process's hook
        return {"values": self.values, "on_add": None}


def use(counters) -> None:
    """Make ``counters`` this process's (a worker pool's initializer)."""
    global _counters
    _counters = counters


def count(documents: int, tokens: int, shards: int = 0) -> None:
    """Called by the shard builders; nothing happens when no build is being tracked."""
    if _counters is not None:
        _counters.add(documents, tokens, shards)


class _Tracker:
    def __init__(self, log, shards: int, context):
        from t5pre.progress import Throttle

        self.counters = _Counters(context) if log is not None else None
        self.log, self.shards = log, shards
        self.throttle = Throttle(EVERY)
        self.first = None  # (tokens, seconds) when the first tokens were counted
        if self.counters is not None:
            self.counters.on_add = self.poll

    def poll(self) -> None:
        """Print a progress line when one is due. The rate counts from the first tokens seen,
        not from the start: the pipeline's start-up (TensorFlow, the first file) is no rate."""
        if self.counters is None:
            return
        if self.first is None:
            tokens = self.counters.read()[1]
            if tokens:
                self.first = (tokens, self.throttle.elapsed())
        if not self.throttle.due():
            return
        from t5pre.progress import fmt_duration, fmt_rate

        documents, tokens, shards = self.counters.read()
        elapsed = self.throttle.elapsed()
        rate = "?"
        if self.first is not None and elapsed > self.first[1] and tokens > self.first[0]:
            rate = fmt_rate((tokens - self.first[0]) / (elapsed - self.first[1]))
        self.log(f"cache: {documents:,} documents | {tokens:,} tokens | {rate} tok/s | "
                 f"shards {shards}/{self.shards} done | {fmt_duration(elapsed)} elapsed")


@contextlib.contextmanager
def tracking(log, shards: int, context):
    """Count the build of ``shards`` shards; ``log`` (a ``print``-like function, or None for
    no progress) gets a line every :data:`EVERY` seconds. Yields the tracker: pass
    ``tracker.counters`` to :func:`use` in each worker, call ``tracker.poll()`` while waiting."""
    tracker = _Tracker(log, shards, context)
    use(tracker.counters)
    try:
        yield tracker
    finally:
        use(None)
