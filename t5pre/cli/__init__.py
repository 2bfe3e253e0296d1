"""The ``t5pre`` command line.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed ``args``. Heavy imports
(TensorFlow, Keras) happen inside those callables, so ``t5pre --help`` stays fast.

No command module imports another: what several share lives in :mod:`t5pre.cli.common`
(``add_run_arguments``, ``add_module_argument``, ``import_modules``; also importable from here)
and :mod:`t5pre.cli.inference` (the model and decoding flags of predict / evaluate / export).
"""

import argparse
import importlib
import os
import sys

from t5pre.errors import T5preError, WorkerLostError
from t5pre.lazy import import_tensorflow_quietly as _import_tensorflow_quietly
from t5pre.lazy import lazy_exports

_EXPORTS = dict.fromkeys(["add_run_arguments", "add_module_argument", "import_modules",
                          "run_overrides"], "t5pre.cli.common")

__all__ = ["SUBCOMMAND_MODULES", "build_parser", "doc_description", "main", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

# Order here is the order in `t5pre --help`.
SUBCOMMAND_MODULES = [
    "vocab",
    "tasks",
    "data",
    "model",
    "convert",
    "pretrain",
    "finetune",
    "evaluate",
    "predict",
    "export",
]


EXIT_CODES = """exit codes:
  0    done
  2    bad input: a config, flag, data file or checkpoint (one line names it)
  3    the model directory cannot be written (disk full, permissions); checkpoints intact
  4    a worker/process of a multi-worker run stopped answering; every surviving process
       exits with 4; restart every process with the same command to resume
  130  stopped by SIGTERM or Ctrl-C (to any one process of a multi-process run) after a
       checkpoint of the current step; the same command resumes"""


def doc_description(doc: str) -> dict:
    """`add_parser` keywords that show a command module's whole docstring (its examples too) as
    the sub-command's ``--help`` description, with the reST literal quotes removed."""
    return {"description": doc.replace("``", "").strip(),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="t5pre",
        description="T5-style denoising pretraining and fine-tuning on Keras 3.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from t5pre import __version__

    parser.add_argument("--version", action="version", version=f"t5pre {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"t5pre.cli.{name}")
        except ModuleNotFoundError as e:  # a sub-command not written yet
            if e.name == f"t5pre.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv=None):
    # TensorFlow's C++ logging at levels 0-2 prints, on every command, lines users cannot act on
    # ("failed call to cuInit" on a machine without a GPU, "oneDNN supports DT_INT64 only on
    # AVX-512"); real failures reach us as Python exceptions anyway. An exported value wins
    # (TF_CPP_MIN_LOG_LEVEL=0 to debug TensorFlow itself).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN kernels: TF enables them by default only on CPUs with AVX-512; on AVX2 machines they
    # made our training step 1.27x faster (benchmarks/train_step.py --onednn on vs off).
    # Must be set before TensorFlow is imported; an explicit user setting wins.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    # `--module mytasks` should find ./mytasks.py as `python -m` would; the console script's
    # sys.path starts at its bin/ directory. Appended, so it never shadows an installed package.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3":
        # Not imported here: a typo in a flag or config key must be reported in about a second,
        # before TensorFlow's 5-10 s import; the first `import tensorflow` is made quiet.
        _quiet_first_tensorflow_import()
    try:
        return args.func(args) or 0
    except T5preError as e:
        print(f"t5pre: error: {e}", file=sys.stderr)
        code = getattr(e, "exit_code", 2)
        if isinstance(e, WorkerLostError):
            _exit_lost_worker(code)
        return code
    except KeyboardInterrupt:
        print("t5pre: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a data error raised inside tf.data reaches us wrapped in an OpError
        converted = _as_data_error(e) or _as_corrupt_checkpoint_error(e)
        if converted is None:
            raise
        print(f"t5pre: error: {converted}", file=sys.stderr)
        return 2


def _exit_lost_worker(code: int) -> None:
    """A multi-process JAX run whose peer is gone cannot shut down cleanly (JAX's exit handler
    waits for the dead process, then aborts): leave now with the code."""
    if "jax" in sys.modules:
        from t5pre.training.distribution_jax import exit_now

        exit_now(code)


class _QuietTensorFlowFinder:
    """A meta-path finder that turns the first ``import tensorflow`` (wherever it happens) into
    :func:`_import_tensorflow_quietly`, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        _import_tensorflow_quietly()
        module = sys.modules["tensorflow"]

        class _Loaded:
            @staticmethod
            def create_module(spec):
                return module

            @staticmethod
            def exec_module(mod):
                pass

        return importlib.util.spec_from_loader(name, _Loaded, origin=getattr(module, "__file__", None))


def _quiet_first_tensorflow_import():
    if "tensorflow" not in sys.modules and not any(
            isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


def _as_data_error(error):
    if "tensorflow" not in sys.modules:  # only TensorFlow wraps our errors
        return None
    from t5pre.data.sources import as_data_error

    return as_data_error(error)


def _as_corrupt_checkpoint_error(error):
    """TensorFlow's checkpoint reader raises a bare ``IndexError`` for a truncated ``.data`` file;
    name the checkpoint (TensorFlow's restore frames hold it as ``save_path``) instead of
    showing its stack trace. A safety net: the restoring code should raise CheckpointError."""
    if not isinstance(error, IndexError) or "Read less bytes than requested" not in str(error):
        return None
    from t5pre.errors import CheckpointError

    path = None
    tb = error.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("save_path")
        if isinstance(candidate, (str, os.PathLike)):
            path = os.fspath(candidate)
        tb = tb.tb_next
    where = f"{path}: " if path else ""
    return CheckpointError(
        f"{where}checkpoint is truncated or corrupt ({error}); delete its files to fall back to "
        "an earlier checkpoint, or pick one with --checkpoint")


if __name__ == "__main__":
    sys.exit(main())
