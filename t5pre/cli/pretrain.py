"""``t5pre pretrain``: denoising pretraining of a T5 model into a model directory.

    t5pre pretrain --model-dir runs/default                       # the packaged demo config
    t5pre pretrain --config configs/pretrain/t5_1_1_base.yaml --model-dir DIR \\
        [--set training.batch_size=256 ...] [--steps N] [--strategy mirrored] [--tpu ADDR]

Re-running the same command resumes from the latest checkpoint in DIR (exact step, learning
rate and data position); a larger ``--steps`` continues a finished run. Without ``--config`` a
re-run starts from the run's own ``DIR/config.yaml``, so earlier ``--set`` values stay. SIGTERM
or Ctrl-C saves a checkpoint of the current step and exits with status 130.
``--module mytasks`` imports your module first, e.g. to register a pretraining task on your own
text (``t5pre.tasks.pretraining.register_text_pretraining_task``) for ``--set data.task=NAME``.
"""

from __future__ import annotations

import os

from t5pre.cli import doc_description
from t5pre.cli.common import (add_module_argument, add_run_arguments, import_modules,
                              run_overrides)
from t5pre.models.layout import RUN_CONFIG_FILE


def register(subparsers):
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a T5 model with a denoising objective",
        **doc_description(__doc__))
    add_run_arguments(parser, "default: DIR/config.yaml when re-running, else the packaged "
                              "configs/pretrain/default.yaml")
    add_module_argument(parser)
    parser.set_defaults(func=run)


def load_run_config(args, packaged: str = "default"):
    """The resolved run config the arguments describe."""
    from t5pre.training.config import load_config, packaged_config_path

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"training.steps={args.steps}")
    overrides += run_overrides(args)
    path = args.config
    if path is None:
        saved = os.path.join(args.model_dir, RUN_CONFIG_FILE)
        if os.path.isfile(saved):
            # A re-run continues the run it finds, not the packaged defaults: otherwise the
            # --set values of the first command would silently revert.
            print(f"using the run config saved in {saved}")
            path = saved
        else:
            path = packaged_config_path(packaged)
    return load_config(path, overrides, model_dir=args.model_dir)


TRAINING_BACKENDS = ("tensorflow", "jax")


def check_backend() -> str:
    """Training runs on the TensorFlow backend (tf.distribute) or the JAX backend
    (keras.distribution); refuse others (torch, numpy, openvino) clearly. Returns the name."""
    from t5pre.errors import ConfigError
    from t5pre.training.distribution_jax import keras_backend_name

    # Read the way Keras does (env, then keras.json) without importing it: importing Keras
    # first would be harmless, but MultiWorkerMirroredStrategy wants to be TF's first user.
    backend = keras_backend_name(imported=False)
    if backend not in TRAINING_BACKENDS:
        raise ConfigError(
            f"training runs on the TensorFlow or JAX backend (KERAS_BACKEND={backend!r}); unset "
            "KERAS_BACKEND or set it to tensorflow or jax")
    return backend


def training_strategy(config):
    """The tf.distribute strategy on TensorFlow (created first thing: MultiWorkerMirroredStrategy
    wants to be TF's first user); None on JAX, where the Trainer's JaxBackend builds its
    keras.distribution (after ``jax.distributed.initialize()`` on several hosts)."""
    if check_backend() == "jax":
        from t5pre.training.distribution_jax import check_strategy_name, initialize_multi_host

        check_strategy_name(config.strategy.name, "jax")
        initialize_multi_host()
        return None
    from t5pre.training.strategy import strategy_for

    return strategy_for(config.strategy)


def run(args):
    import_modules(getattr(args, "module", []))
    config = load_run_config(args)
    check_backend()
    from t5pre.training.data import get_task_or_mixture

    get_task_or_mixture(config.data)  # an unknown name is reported before TensorFlow loads
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs (None on JAX).
    strategy = training_strategy(config)
    from t5pre.training.trainer import Trainer, TrainingInterrupted

    try:
        result = Trainer(config, args.model_dir, strategy=strategy).train()
    except TrainingInterrupted:  # the trainer has saved and said where; 128 + SIGINT
        return 130
    return 0 if result.step >= config.training.steps else 1
