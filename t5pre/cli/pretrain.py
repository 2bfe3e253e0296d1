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
        saved = os.path.join(args.model_dir, "config.yaml")
        if os.path.isfile(saved):
            # A re-run continues the run it finds, not the packaged defaults: otherwise the
            # --set values of the first command would silently revert.
            print(f"using the run config saved in {saved}")
            path = saved
        else:
            path = packaged_config_path(packaged)
    return load_config(path, overrides, model_dir=args.model_dir)


def check_backend() -> None:
    """The training loop is tf.distribute code: refuse other Keras backends clearly."""
    import json
    import os

    from t5pre.errors import ConfigError

    # Read the way Keras does (env, then keras.json) without importing it: importing Keras
    # first would be harmless, but MultiWorkerMirroredStrategy wants to be TF's first user.
    backend = os.environ.get("KERAS_BACKEND")
    if not backend:
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        try:
            with open(os.path.join(home, "keras.json")) as f:
                backend = json.load(f).get("backend")
        except (OSError, ValueError):
            backend = None
    backend = backend or "tensorflow"
    if backend != "tensorflow":
        raise ConfigError(
            f"training runs on the TensorFlow backend (KERAS_BACKEND={backend!r}); unset "
            "KERAS_BACKEND or set it to tensorflow. The model itself runs on JAX for "
            "inference; see the README (JAX: keras.distribution.DataParallel)")


def run(args):
    import_modules(getattr(args, "module", []))
    config = load_run_config(args)
    check_backend()
    from t5pre.training.data import get_task_or_mixture

    get_task_or_mixture(config.data)  # an unknown name is reported before TensorFlow loads
    from t5pre.training.strategy import strategy_for

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = strategy_for(config.strategy)
    from t5pre.training.trainer import Trainer, TrainingInterrupted

    try:
        result = Trainer(config, args.model_dir, strategy=strategy).train()
    except TrainingInterrupted:  # the trainer has saved and said where; 128 + SIGINT
        return 130
    return 0 if result.step >= config.training.steps else 1
