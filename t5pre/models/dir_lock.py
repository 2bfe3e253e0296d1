"""The exclusive lock of a model directory: one training process writes a directory at a time.

``DIR/.lock`` is held with ``fcntl.flock`` for the whole run. The kernel drops a flock when the
holding process dies (SIGKILL, OOM, a crash), so a lock left by a killed run is never stale: the
next run takes it over at once. While it is held the file says who holds it (pid, host, start
time, command), and a second ``pretrain``/``finetune`` on the same directory is refused with an
error naming that holder. Under MultiWorkerMirroredStrategy only the chief takes the lock (the
other workers write nothing into the directory).

flock works on local filesystems and on NFSv4; on filesystems without it (some FUSE mounts) the
lock cannot be taken and the run is refused with a message saying so, rather than running
unprotected. Set ``T5PRE_NO_LOCK=1`` to run without the lock on such a filesystem.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from t5pre.errors import CheckpointError
from t5pre.models.layout import LOCK_FILE  # noqa: F401


class ModelDirLockedError(CheckpointError):
    """Another process holds the model directory."""


def read_holder(model_dir: str) -> dict | None:
    """What the lock file says about its holder (None when it says nothing readable)."""
    try:
        with open(os.path.join(model_dir, LOCK_FILE), encoding="utf-8") as f:
            text = f.read()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (the lock file names no holder yet)"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when} "
            f"({holder.get('command', '?')})")


class ModelDirLock:
    """``with ModelDirLock(dir):`` -- exclusive for the run; re-entrant within one process."""

    _held: dict = {}  # real path -> (fd, depth): a process re-entering its own lock

    def __init__(self, model_dir: str, *, enabled: bool = True):
        self.model_dir = os.fspath(model_dir)
        self.enabled = enabled and os.environ.get("T5PRE_NO_LOCK", "") in ("", "0")
        self._key = None

    def acquire(self) -> "ModelDirLock":
        if not self.enabled:
            return self
        import fcntl

        try:
            os.makedirs(self.model_dir, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"{self.model_dir}: cannot create the model directory "
                                  f"({e.strerror or e})") from None
        path = os.path.join(self.model_dir, LOCK_FILE)
        key = os.path.realpath(path)
        if key in self._held:
            fd, depth = self._held[key]
            self._held[key] = (fd, depth + 1)
            self._key = key
            return self
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot open the lock file ({e.strerror or e})") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ModelDirLockedError(
                f"{self.model_dir}: in use by {_describe(read_holder(self.model_dir))}; wait for "
                "it to finish, stop it, or use another --model-dir") from None
        except OSError as e:
            os.close(fd)
            raise CheckpointError(
                f"{path}: this filesystem does not support file locks ({e.strerror or e}); set "
                "T5PRE_NO_LOCK=1 to run without the lock (then never start two runs on this "
                "directory)") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(os.path.basename(a) if i == 0 else a
                                      for i, a in enumerate(sys.argv))[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self._held[key] = (fd, 1)
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        fd, depth = self._held[self._key]
        if depth > 1:
            self._held[self._key] = (fd, depth - 1)
        else:
            import fcntl

            del self._held[self._key]
            try:
                os.ftruncate(fd, 0)  # says "nobody" to a reader; the flock is what counts
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._key = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
