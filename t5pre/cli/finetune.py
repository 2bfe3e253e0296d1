"""``t5pre finetune``: fine-tune a pretrained T5 on a downstream task into a model directory.

    t5pre finetune --init-from runs/default --task default_summarize --model-dir runs/ft
    t5pre finetune --config configs/finetune/squad.yaml --init-from runs/pre@ckpt-300 \\
        --task squad_v1.1_files --model-dir runs/squad [--set training.batch_size=64] [--steps N]

``--init-from`` takes a ``t5pre pretrain`` model directory (latest checkpoint, or ``DIR@ckpt-N``
for another), a ``save_pretrained`` / ``t5pre convert hf`` directory, a Hugging Face
T5 directory, or ``random``. The run evaluates the validation split every
``training.eval_every`` steps by decoding it and scoring it with the task's metrics (TensorBoard:
``DIR/logs/eval``) and keeps the best model in ``DIR/best/``. Re-running the command resumes.
"""

from __future__ import annotations

import argparse
import os

from t5pre.cli import doc_description
from t5pre.cli.common import (add_module_argument, add_run_arguments, import_modules,
                              run_overrides)
from t5pre.errors import ConfigError

RANDOM_INIT = "random"


def register(subparsers):
    parser = subparsers.add_parser(
        "finetune", help="fine-tune a pretrained model on a downstream task",
        **doc_description(__doc__))
    add_run_arguments(parser, "a path or a packaged name: default_summarize, debian_descriptions, "
                              "squad, cnn_dailymail; default: default_summarize")
    parser.add_argument("--init-from", required=True, metavar="DIR[@ckpt-N]",
                        help="the model to start from: a pretraining model dir, a save_pretrained "
                             "dir, a Hugging Face T5 dir, or 'random'")
    parser.add_argument("--init-checkpoint", type=int, help=argparse.SUPPRESS)  # removed
    parser.add_argument("--task", help="the downstream task (default: the config's data.task)")
    parser.add_argument("--use-model-vocabulary", action="store_true",
                        help="tokenise the task's text with the init model's vocabulary when it "
                             "differs from the task's (e.g. a Hugging Face T5 on a built-in task)")
    add_module_argument(parser)
    parser.set_defaults(func=run)


def config_path(value):
    """A config path, or the name of a packaged fine-tune config (``squad`` -> its YAML)."""
    import importlib.resources

    name = value or "default_summarize"
    if value and (os.path.exists(value) or os.sep in value or value.endswith((".yaml", ".yml"))):
        return value
    ref = importlib.resources.files("t5pre.configs").joinpath("finetune", f"{name}.yaml")
    if not ref.is_file():
        packaged = sorted(p.name[:-5] for p in
                          importlib.resources.files("t5pre.configs").joinpath("finetune").iterdir()
                          if p.name.endswith(".yaml"))
        raise ConfigError(f"--config {value}: no such file and no packaged fine-tune config of "
                          f"that name (packaged: {', '.join(packaged)})")
    return str(ref)


def run(args):
    from t5pre.finetune import finetune
    from t5pre.models.store import resolve_init
    from t5pre.training.config import load_finetune_config

    if args.init_checkpoint is not None:
        raise ConfigError(f"--init-checkpoint was removed: name the checkpoint in the init source, "
                          f"--init-from {args.init_from}@ckpt-{args.init_checkpoint}")
    import_modules(args.module)
    overrides = list(args.overrides)
    overrides += run_overrides(args)
    if args.use_model_vocabulary:
        overrides.append("finetune.use_model_vocabulary=true")
    run_config = load_finetune_config(config_path(args.config), overrides, task=args.task,
                                      steps=args.steps, model_dir=args.model_dir)
    init = None if args.init_from == RANDOM_INIT else resolve_init(args.init_from)
    if run_config.data.task:
        from t5pre.data.registry import get_downstream_task

        get_downstream_task(run_config.data.task)  # reported before TensorFlow loads

    from t5pre.cli.pretrain import training_strategy

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs (None on JAX).
    strategy = training_strategy(run_config)
    result = finetune(run_config, args.model_dir, init=init, strategy=strategy,
                      modules=args.module)
    if result.best_score is not None:
        print(f"best {result.best_metric} {result.best_score:.3f} at step {result.best_step}: "
              f"{os.path.join(args.model_dir, 'best')}")
    return 0 if result.train.step >= run_config.training.steps else 1


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()
