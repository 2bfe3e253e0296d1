"""Writing small files so that a crash or a kill never leaves a half-written one.

Every metadata file t5pre writes (run configs, model configs, manifests, score files, logged
steps) goes through here: the text is written to ``PATH.tmp-PID`` beside the target and renamed
over it (``os.replace`` is atomic on POSIX), so a reader sees the old file or the new one.

:func:`check_output_path` is the one check of an output path that every command makes before
its work starts (a bad ``--out`` is one line and exit 2, an unwritable place exit 3)."""

from __future__ import annotations

import json
import os


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str, value, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def check_output_path(path, *, flag: str = "--out", directory: bool = False,
                      overwrite: bool | None = None) -> str:
    """Checks, before any work starts, that an output can be written at ``path``; returns it
    absolute. Every command that writes an output (export, evaluate, data cache, vocab train)
    calls this first, so a bad ``--out`` costs one line, not a decoded split or a traceback.

    Raises :class:`~t5pre.errors.ConfigError` (exit 2) for a path that cannot be used as given:
    it lies under a regular file, it is a directory where a file is written (or a file where a
    directory is), or it is a non-empty directory and ``overwrite`` is False (``None``: an
    existing directory is written into). Raises :class:`~t5pre.errors.StorageError` (exit 3)
    when the place cannot be written (permissions, a read-only or special file system): a probe
    file is created and removed in the directory that would receive the output; nothing else is
    created, no missing parent directory either."""
    from t5pre.errors import ConfigError, StorageError

    path = os.fspath(path)
    shown = f"{flag} {path}" if flag else path
    if not path.strip():
        raise ConfigError(f"{flag or 'output path'}: empty path")
    try:
        target = os.path.abspath(path)
        exists = os.path.lexists(target)
    except ValueError as e:  # NUL bytes
        raise ConfigError(f"{shown}: not a usable path ({e})") from None
    probe_in = []
    if exists:
        is_dir = os.path.isdir(target)
        if directory and not is_dir:
            raise ConfigError(f"{shown}: exists and is not a directory")
        if not directory and is_dir:
            raise ConfigError(f"{shown}: is a directory; give a file name")
        if directory and overwrite is False and _non_empty(target):
            raise ConfigError(f"{shown}: already exists (pass --overwrite to replace it, "
                              "or choose another path)")
        if directory:
            probe_in.append(target)
    parent = os.path.dirname(target)
    while not os.path.lexists(parent):  # the nearest existing ancestor receives the new entries
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{shown}: {parent} is a file, not a directory")
    probe_in.insert(0, parent)
    for where in probe_in:
        reason = _cannot_write_in(where)
        if reason:
            raise StorageError(f"{shown}: cannot write in {where} ({reason}); choose a "
                               "writable place")
    return target


def _non_empty(directory: str) -> bool:
    with os.scandir(directory) as entries:
        return any(True for _ in entries)


def _cannot_write_in(directory: str) -> str | None:
    """Why no file can be created in ``directory`` (None when one can): creates and removes a
    probe file, which also catches what permission bits do not tell (read-only mounts, /proc,
    a process running as root)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".t5pre-write-check-", dir=directory)
    except OSError as e:
        import errno

        if e.errno == errno.ENOENT and os.path.isdir(directory):  # /proc, /sys: no new files
            return "its file system accepts no new files"
        return e.strerror or type(e).__name__
    os.close(fd)
    try:
        os.remove(probe)
    except OSError:
        pass
    return None
