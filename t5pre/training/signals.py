"""Stopping a run between two steps: SIGTERM and Ctrl-C become a flag the training loop checks.

The loop saves a checkpoint of the current step and raises :class:`TrainingInterrupted`, so the
same command resumes exactly. Backend-neutral (no TensorFlow or JAX here).

With several processes every process must stop at the same step (each takes part in the
save), but a signal often reaches only one of them. The backend then gives a ``sync``
``(step, requested_here) -> bool`` that every process asks after every step and that answers
the same on all of them: on JAX the preemption service
(:func:`t5pre.training.distribution_jax.reached_stop_point`, which catches SIGTERM itself, so
SIGTERM is left to it and SIGINT is forwarded to it as SIGTERM); on TensorFlow's
MultiWorkerMirroredStrategy an all-reduce of the local flags."""

from __future__ import annotations


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM or Ctrl-C stopped training after a checkpoint of the current step was saved.

    A KeyboardInterrupt, so every caller that already treats Ctrl-C as "stop" (the CLI maps it
    to exit code 130) does the right thing; ``step`` and ``checkpoint`` say where it stopped."""

    def __init__(self, message: str, step: int, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class StopRequests:
    """Turns SIGTERM and the first Ctrl-C into a flag the loop checks between steps.

    A signal must not interrupt a step half-way: a KeyboardInterrupt raised by Python's default
    handler lands after the compiled step has updated the weights but before the step counter
    moved, so a checkpoint saved then would not resume exactly. A second Ctrl-C aborts at once
    (no save), for a save that hangs. Handlers are installed only in the main thread (Python
    allows no other) and the previous ones are restored on exit."""

    def __init__(self, sync=None):
        """``sync``: a ``(step, requested_here) -> bool`` agreed by every process (asked after
        every step); with a true ``catches_sigterm`` attribute it learns of SIGTERM itself.
        None for one process."""
        self.signal_name = None
        self._previous = {}
        self._sync = sync
        self._sync_sigterm = bool(getattr(sync, "catches_sigterm", False))

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        # With a sync point, SIGTERM belongs to it (its C-level handler must stay installed).
        for sig in (signal.SIGINT,) if self._sync_sigterm else (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # e.g. not allowed in an embedded interpreter
                pass
        return self

    def _handle(self, signum, frame):
        import signal

        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user wants out now
        self.signal_name = signal.Signals(signum).name
        if self._sync_sigterm:
            import os

            os.kill(os.getpid(), signal.SIGTERM)  # tell every process, through the sync point

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def should_stop(self, step: int) -> bool:
        """Whether to stop after ``step`` (every process gets the same answer with a sync)."""
        if self._sync is None:
            return self.requested
        return bool(self._sync(step, self.requested))

    def describe(self) -> str:
        """What stopped the run, for the last line."""
        if self.signal_name is not None:
            return self.signal_name
        return "SIGTERM" if self._sync is None else "SIGTERM or SIGINT to one of the workers"

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        return False
