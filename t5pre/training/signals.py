"""Stopping a run between two steps: SIGTERM and Ctrl-C become a flag the training loop checks.

The loop saves a checkpoint of the current step and raises :class:`TrainingInterrupted`, so the
same command resumes exactly. Backend-neutral (no TensorFlow or JAX here)."""

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

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
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

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        return False
