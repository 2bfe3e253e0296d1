"""Arguments and steps that several ``t5pre`` commands share, so that no command module imports
another: the run arguments of ``pretrain`` and ``finetune``, and ``--module`` (import the user's
task-registering code first) of every command that looks a task up."""

from __future__ import annotations

import importlib

from t5pre.errors import ConfigError


def add_run_arguments(parser, default_config_help: str) -> None:
    """The arguments ``pretrain`` shares with ``finetune``."""
    from t5pre.training.config import STRATEGIES  # a plain-Python module: no TensorFlow

    parser.add_argument("--config", help=f"run config YAML ({default_config_help})")
    parser.add_argument("--model-dir", required=True,
                        help="where checkpoints, logs and model files go; resumed if it has "
                             "checkpoints")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.batch_size=64 "
                             "(value parsed as YAML; repeatable)")
    parser.add_argument("--steps", type=int, help="total training steps (= --set training.steps=N)")
    parser.add_argument("--strategy", choices=STRATEGIES,
                        help="tf.distribute strategy on TensorFlow (auto, one_device, mirrored, "
                             "multi_worker, tpu), keras.distribution on JAX (auto, "
                             "data_parallel, fsdp, one_device); "
                             "default: the config's, normally auto")
    parser.add_argument("--tpu", help="TPU name or grpc:// address (implies --strategy tpu)")
    parser.add_argument("--profile-steps", metavar="START:END",
                        help="write a TensorFlow profiler trace of steps START..END to "
                             "DIR/logs/train (TensorBoard's Profile tab); = --set "
                             "training.profile_steps=START:END")


def run_overrides(args) -> list:
    """``--profile-steps`` / ``--tpu`` / ``--strategy`` of :func:`add_run_arguments` as config
    overrides (``--tpu`` alone implies the tpu strategy)."""
    from t5pre.training.config import FlagOverride  # a message names the flag as typed

    overrides = []
    if getattr(args, "profile_steps", None):
        overrides.append(FlagOverride(f"training.profile_steps='{args.profile_steps}'",
                                      f"--profile-steps {args.profile_steps}"))
    if args.tpu:
        overrides.append(FlagOverride(f"strategy.tpu={args.tpu}", f"--tpu {args.tpu}"))
        if not args.strategy:
            overrides.append("strategy.name=tpu")
    if args.strategy:
        overrides.append(f"strategy.name={args.strategy}")
    return overrides


def add_module_argument(parser) -> None:
    parser.add_argument("--module", action="append", default=[], metavar="PYTHON_MODULE",
                        help="import this module first (it may register your own tasks); "
                             "repeatable")


def import_modules(names) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"--module {name}: cannot import it ({e})") from None
