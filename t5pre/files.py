"""Writing files and directories so that a crash or a kill never leaves a half-written one.

The one way t5pre writes anything a reader may look at (run configs, model configs, vocabularies,
checkpoints and their state file, manifests, score files, exports):

* a **file** is written to a temporary name beside the target (``NAME.tmp-PID-XXXXXXXX``),
  flushed and fsynced, then renamed over the target (``os.replace``: atomic on POSIX), so a
  reader sees the old file or the new one: :func:`atomic_file` (a context manager yielding the
  open file), :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json`;
* a **directory** is built in a sibling ``NAME_temp-XXXXXXXX/`` and renamed into place once
  complete: :func:`atomic_directory`. With ``replace=True`` an existing directory is moved
  aside first and deleted only once the new one is in place (it is put back if the rename
  fails); with ``merge=True`` the finished files are moved into an existing directory one by one,
  ``last`` (the file that marks the set complete) last, and the directory's other files stay.

On any exception, the temporary file or directory is removed and the target is left as it was.
Temporary names end in ``.tmp-*`` / ``_temp-*``, so that what a kill leaves behind is
recognisable (the checkpoint keeper deletes ``checkpoint.tmp*`` and ``ckpt-N_temp*``).
:func:`check_output_path` is the one check of an output path that every command makes before
its work starts (a bad ``--out`` is one line and exit 2, an unwritable place exit 3); 
:func:`check_target` is its form for a directory written whole (an export).

The helpers take local paths; this module imports nothing but ``t5pre.errors``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import tempfile
from typing import Iterator

from t5pre.errors import ConfigError


def fsync_directory(path) -> None:
    """Makes a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_file(path, mode: str = "w", *, encoding: str | None = "utf-8",
                fsync: bool = True) -> Iterator:
    """``with atomic_file(path, "wb") as f: f.write(...)``: ``f`` writes a temporary file beside
    ``path`` (created with the usual mode, 0666 less the umask), which replaces ``path`` when the
    block ends without an exception; an exception removes it and leaves ``path`` as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if fsync:
        fsync_directory(directory)


def atomic_write_bytes(path, data: bytes, *, fsync: bool = True) -> None:
    with atomic_file(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path, text: str, *, fsync: bool = True) -> None:
    with atomic_file(path, "w", fsync=fsync) as f:
        f.write(text)


def atomic_write_json(path, value, *, indent: int | None = 2, fsync: bool = True,
                      **dumps_kwargs) -> None:
    atomic_write_text(path, json.dumps(value, indent=indent, **dumps_kwargs) + "\n", fsync=fsync)


def check_target(target, overwrite: bool, flag: str | None = None) -> pathlib.Path:
    """For a directory that a command writes whole (an export): refuse a target that exists and
    is not a directory, a non-empty one unless ``overwrite``, and a place that cannot be written
    (:func:`check_output_path`; ``flag``, e.g. ``--out``, is how messages name the path)."""
    check_output_path(target, flag=flag, directory=True, overwrite=bool(overwrite))
    return pathlib.Path(target)


def fsync_tree(root: str) -> None:
    """fsyncs every file (links skipped) and directory under ``root``."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(folder)


def _usual_directory_mode(path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp makes 0700; another user (a server) must read it


@contextlib.contextmanager
def atomic_directory(target, *, replace: bool = False, merge: bool = False, last=(),
                     fsync: bool = True, before_rename=None) -> Iterator[pathlib.Path]:
    """``with atomic_directory(target) as staging: <write into staging>``: ``staging`` is a new
    empty sibling ``TARGET_temp-XXXXXXXX/`` (usual permissions) that becomes ``target`` when the
    block ends without an exception (its files fsynced first when ``fsync``). An existing
    ``target`` is an error (``FileExistsError``) unless ``replace`` (swap: the old directory is
    deleted once the new one is in place, and restored if the rename fails) or ``merge`` (move
    the files in one by one, the names in ``last`` last; the directory's other files stay).
    ``before_rename()`` runs just before the rename (e.g. to check the target again). On an
    exception the staging directory is removed and ``target`` is untouched."""
    target = os.fspath(target)
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(target) + "_temp-", dir=parent)
    retired = None
    try:
        _usual_directory_mode(staging)
        yield pathlib.Path(staging)
        if fsync:
            fsync_tree(staging)
        if before_rename is not None:
            before_rename()
        if merge and os.path.isdir(target):
            names = sorted(os.listdir(staging))
            ordered = [n for n in names if n not in last] + [n for n in last if n in names]
            for name in ordered:
                source, dest = os.path.join(staging, name), os.path.join(target, name)
                if os.path.isdir(source) and os.path.isdir(dest):
                    shutil.rmtree(dest)
                os.replace(source, dest)
        elif os.path.lexists(target):
            if not (replace or merge):
                raise FileExistsError(f"{target}: already exists")
            retired = tempfile.mkdtemp(prefix=os.path.basename(target) + "_old-", dir=parent)
            os.rename(target, os.path.join(retired, "old"))
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(os.path.join(retired, "old"), target)  # put the old one back
                raise
        else:
            os.rename(staging, target)
        if fsync:
            fsync_directory(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


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
