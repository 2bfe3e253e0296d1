"""``t5pre pretrain``: denoising pretraining of a T5 model into a model directory.

    t5pre pretrain --model-dir runs/default                       # the packaged demo config
    t5pre pretrain --config configs/pretrain/t5_1_1_base.yaml --model-dir DIR \\
        [--set training.batch_size=256 ...] [--steps N] [--strategy mirrored] [--tpu ADDR]

Re-running the same command resumes from the latest checkpoint in DIR (exact step, learning
rate and data position); a larger ``--steps`` continues a finished run. Without ``--config`` a
re-run starts from the run's own ``DIR/config.yaml``, so earlier ``--set`` values stay. SIGTERM
or Ctrl-C saves a checkpoint of the current step and exits with status 130.
Your own text needs no Python: ``--files 'corpus/*.txt'`` (repeatable; ``--validation-files``
for a held-out split) trains T5 span corruption on it, cut into documents by ``--format``:
``lines`` (one per line, the default for text), ``paragraphs`` (separated by blank lines, hard
wraps joined), ``file`` (one per file) or ``jsonl`` (``--text-field``, default for .jsonl).
``--vocabulary`` takes a ``t5pre vocab train`` model. The same keys exist in the run config
(``data.files``, ``data.format``, ``data.text_field``, ``data.vocabulary``).

``--module mytasks`` imports your module first, e.g. one that registers a richer task, for
``--set data.task=NAME``. The run records files, format and modules in DIR/config.yaml: a
resume needs none of them repeated.

    t5pre pretrain --model-dir runs/books --files 'books/*.txt' --format paragraphs
    t5pre pretrain --model-dir runs/books --steps 4000     # resume / extend: nothing repeated
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
    add_files_arguments(parser)
    add_module_argument(parser)
    parser.set_defaults(func=run)


def add_files_arguments(parser) -> None:
    from t5pre.training.config import TEXT_FORMATS

    group = parser.add_argument_group("your own files (no Python needed)")
    group.add_argument("--files", nargs="+", action="extend", metavar="GLOB",
                       help="pretrain on these files (quote globs: 'corpus/*.txt'; .gz read as "
                            "gzip; repeatable) instead of a registered task "
                            "(= data.files.train)")
    group.add_argument("--validation-files", nargs="+", action="extend", metavar="GLOB",
                       help="held-out files for the periodic evaluation "
                            "(= data.files.validation)")
    group.add_argument("--format", choices=TEXT_FORMATS + ("jsonl",),
                       help="what a document is: lines (one per non-blank line), paragraphs "
                            "(separated by blank lines, hard-wrapped lines joined), file (one "
                            "per file), jsonl (JSON Lines, --text-field); default: jsonl for "
                            ".jsonl/.json files, else lines (= data.format)")
    group.add_argument("--text-field", metavar="NAME",
                       help="JSON Lines: the field holding the text, nested as a.b (default: "
                            "text; = data.text_field)")
    group.add_argument("--vocabulary", metavar="SPIECE_MODEL",
                       help="the SentencePiece model (t5pre vocab train) or model dir that "
                            "tokenizes the files (default: the shipped one; = data.vocabulary)")


def files_overrides(args) -> list:
    """The ``--files`` group as run-config overrides (new files make a new files task)."""
    import json

    overrides = []
    if args.files or args.validation_files:
        if not args.files:
            from t5pre.errors import ConfigError

            raise ConfigError("--validation-files needs --files (the training files)")
        files = {"train": args.files}
        if args.validation_files:
            files["validation"] = args.validation_files
        overrides += [f"data.files={json.dumps(files)}", "data.task=null", "data.mixture=null"]
    for flag, key in (("format", "format"), ("text_field", "text_field"),
                      ("vocabulary", "vocabulary")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"data.{key}={json.dumps(value)}")
    return overrides


def load_run_config(args, packaged: str = "default"):
    """The resolved run config the arguments describe."""
    from t5pre.training.config import FlagOverride, load_config, packaged_config_path

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(FlagOverride(f"training.steps={args.steps}", f"--steps {args.steps}"))
    overrides += run_overrides(args)
    overrides += files_overrides(args)
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


def record_modules(recorded, given) -> list:
    """Imports the modules a run recorded and the ``--module`` values given now; returns them
    all (recorded first, no repeats) for the run config."""
    modules = list(dict.fromkeys(list(recorded or []) + list(given or [])))
    import_modules(modules)
    return modules


def find_task(config):
    """The run's task or mixture; an unknown name hints at ``--module``."""
    from t5pre.errors import ConfigError
    from t5pre.training.data import get_task_or_mixture

    try:
        return get_task_or_mixture(config.data)
    except ConfigError as e:
        if "unknown" not in str(e):
            raise
        raise ConfigError(f"{e}; a task that your own code registers needs --module "
                          "PYTHON_MODULE (recorded in the run, so needed once), and your own "
                          "files need no code: --files GLOB") from None


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
    config = load_run_config(args)
    # The saved run's modules, then new --module values; the run records them all.
    config.data.modules = record_modules(config.data.modules, args.module)
    check_backend()
    find_task(config)  # an unknown name or a glob matching nothing, before the model is built
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs (None on JAX).
    strategy = training_strategy(config)
    from t5pre.training.trainer import Trainer, TrainingInterrupted

    try:
        result = Trainer(config, args.model_dir, strategy=strategy).train()
    except TrainingInterrupted:  # the trainer has saved and said where; 128 + SIGINT
        return 130
    return 0 if result.step >= config.training.steps else 1
