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


class MissingDependencyError(T5preError, ImportError):
    """An optional package is not installed; the message names the extra that provides it."""
