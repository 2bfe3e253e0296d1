"""Errors that t5pre raises for bad input, configs and checkpoints.

Every user-facing failure is a :class:`T5preError` whose message names the file, line, field
or task at fault; the CLI prints it as one line (``t5pre: error: ...``) instead of a traceback.
"""


class T5preError(Exception):
    """Base class of every error t5pre raises on purpose."""


class ConfigError(T5preError, ValueError):
    """A config file, a config key or a command-line value is wrong."""


class DataError(T5preError, ValueError):
    """A data source, a task or an example is wrong (names the file/line/task)."""


class CheckpointError(T5preError):
    """A model directory or checkpoint is missing, partial, corrupt or incompatible."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint's files are missing, truncated or damaged (the keeper falls back past it)."""


class StorageError(T5preError):
    """The model directory cannot be written (disk full, read-only, permissions), the
    checkpoints written before are intact; or an output path (``--out``) cannot be written,
    found before the work starts (:func:`t5pre.files.check_output_path`). The CLI exits with
    code 3."""

    exit_code = 3

    @classmethod
    def from_os_error(cls, error: BaseException, model_dir: str) -> "StorageError":
        where = getattr(error, "filename", None) or model_dir
        reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or
                                                       [type(error).__name__])[0][:300]
        return cls(f"{where}: cannot write ({reason}); the checkpoints already in {model_dir} "
                   "are intact: free space or fix the permissions, then re-run the same command "
                   "to resume")


class WorkerLostError(T5preError):
    """A worker of a multi-worker run stopped answering (crashed, killed, network). The
    checkpoints written before are intact. The CLI exits with code 4."""

    exit_code = 4


class MissingDependencyError(T5preError, ImportError):
    """An optional package is not installed; the message names the extra that provides it."""
