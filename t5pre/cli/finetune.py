"""``t5pre finetune``: fine-tune a pretrained T5 on a downstream task into a model directory.

    t5pre finetune --init-from runs/default --task default_summarize --model-dir runs/ft
    t5pre finetune --config configs/finetune/squad.yaml --init-from runs/pre@ckpt-300 \\
        --task squad_v1.1_files --model-dir runs/squad [--set training.batch_size=64] [--steps N]

``--init-from`` takes a ``t5pre pretrain`` model directory (latest checkpoint, or ``DIR@ckpt-N``
for another), a ``save_pretrained`` / ``t5pre convert hf`` directory, a Hugging Face
T5 directory, or ``random``. The run evaluates the validation split every
``training.eval_every`` steps by decoding it and scoring it with the task's metrics (TensorBoard:
``DIR/logs/eval``) and keeps the best model in ``DIR/best/``. Re-running the command resumes.

Your own data needs no Python: JSON Lines files with an input and a target field (scored with
ROUGE), or SQuAD v1.1 JSON files (``--format squad``, scored with SQuAD exact match / F1):

    t5pre finetune --init-from runs/pre --model-dir runs/mysum --train-files train.jsonl \
        --validation-files val.jsonl --input-field document --target-field summary \
        --prefix 'summarize: '
    t5pre finetune --init-from runs/pre --model-dir runs/myqa --format squad \
        --train-files train.json --validation-files dev.json
    t5pre evaluate --model-dir runs/mysum/best        # nothing repeated

Without ``--config`` the run takes the packaged default_summarize settings (lengths 128 / 32,
200 steps) and picks ``DIR/best`` by the task's main score (ROUGE-Lsum, or SQuAD F1).
The same keys exist in the run config (``data.files: {train: ..., validation: ...}``,
``data.format``, ``data.input_field``, ``data.target_field``, ``data.prefix``). The text is
tokenized with the init model's vocabulary. The run records the files, fields, prefix, format,
lengths, ``--use-model-vocabulary`` and ``--module`` values in DIR/finetune.json and
DIR/best/best.json, so ``evaluate`` and ``predict`` need none of them again.
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
    parser.add_argument("--init-from", metavar="DIR[@ckpt-N]",
                        help="the model to start from: a pretraining model dir, a save_pretrained "
                             "dir, a Hugging Face T5 dir, or 'random'; required for a new run, "
                             "recorded for a re-run (`t5pre finetune --model-dir DIR` continues "
                             "the run in DIR with nothing repeated)")
    parser.add_argument("--init-checkpoint", type=int, help=argparse.SUPPRESS)  # removed
    parser.add_argument("--task", help="the downstream task (default: the config's data.task)")
    parser.add_argument("--use-model-vocabulary", action="store_true",
                        help="tokenise the task's text with the init model's vocabulary when it "
                             "differs from the task's (e.g. a Hugging Face T5 on a built-in task)")
    group = parser.add_argument_group("your own files (no Python needed)")
    group.add_argument("--train-files", nargs="+", action="extend", metavar="GLOB",
                       help="fine-tune on these files instead of a registered task (quote "
                            "globs; = data.files.train)")
    group.add_argument("--validation-files", nargs="+", action="extend", metavar="GLOB",
                       help="the files evaluated during training and by `t5pre evaluate` "
                            "(= data.files.validation)")
    group.add_argument("--format", choices=("jsonl", "squad"),
                       help="jsonl: JSON Lines with --input-field / --target-field (ROUGE); "
                            "squad: SQuAD v1.1 JSON (SQuAD EM/F1); default: jsonl "
                            "(= data.format)")
    group.add_argument("--input-field", metavar="NAME",
                       help="JSON Lines: the input text's field, nested as a.b "
                            "(= data.input_field)")
    group.add_argument("--target-field", metavar="NAME",
                       help="JSON Lines: the target text's field (= data.target_field)")
    group.add_argument("--prefix", metavar="TEXT",
                       help="put before every input, e.g. 'summarize: ' (default: nothing; "
                            "= data.prefix)")
    add_module_argument(parser)
    parser.set_defaults(func=run)


def files_overrides(args) -> list:
    """The own-files flags as run-config overrides (files replace the config's task)."""
    import json

    overrides = []
    if args.validation_files and not args.train_files:
        raise ConfigError("--validation-files needs --train-files")
    if args.train_files:
        if args.task:
            raise ConfigError("give --task or --train-files, not both")
        files = {"train": args.train_files}
        if args.validation_files:
            files["validation"] = args.validation_files
        overrides += [f"data.files={json.dumps(files)}", "data.task=null", "data.mixture=null"]
        if not args.config:  # the packaged default's rougeLsum may not be the files' metric
            overrides.append("finetune.metric=null")
    for flag in ("format", "input_field", "target_field", "prefix"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"data.{flag}={json.dumps(value)}")
    return overrides


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


def recorded_run(model_dir) -> dict:
    """What a re-run without ``--init-from`` continues: the fine-tuning run recorded in
    ``model_dir`` (``finetune.json``: the init source; ``config.yaml``: the resolved run config,
    whose architecture fields are dropped because fine-tuning takes them from the init model
    again). ConfigError when ``model_dir`` holds no fine-tuning run."""
    from t5pre.models.layout import FINETUNE_INFO_FILE, RUN_CONFIG_FILE
    from t5pre.models.store import read_json_info
    from t5pre.training.config import CHANGEABLE_MODEL_FIELDS, read_yaml

    info = read_json_info(model_dir, FINETUNE_INFO_FILE)
    saved = os.path.join(model_dir, RUN_CONFIG_FILE)
    if info is None or not os.path.isfile(saved):
        raise ConfigError(f"--init-from is required: {model_dir} holds no fine-tuning run to "
                          "continue (no finetune.json and config.yaml there)")
    config, _ = read_yaml(saved)
    model = config.get("model") or {}
    model["overrides"] = {k: v for k, v in (model.get("overrides") or {}).items()
                          if k in CHANGEABLE_MODEL_FIELDS}
    model.pop("init_from", None)
    config["model"] = model
    init_from = info.get("init_from") or RANDOM_INIT
    print(f"continuing the fine-tuning run recorded in {model_dir} (init {init_from}, "
          f"task {info.get('task')})")
    return {"init_from": init_from, "config": config}


def run(args):
    from t5pre.finetune import finetune
    from t5pre.models.store import resolve_init
    from t5pre.training.config import load_finetune_config

    if args.init_checkpoint is not None:
        raise ConfigError(f"--init-checkpoint was removed: name the checkpoint in the init source, "
                          f"--init-from {args.init_from}@ckpt-{args.init_checkpoint}")
    overrides = list(args.overrides)
    overrides += run_overrides(args)
    overrides += files_overrides(args)
    if args.use_model_vocabulary:
        overrides.append("finetune.use_model_vocabulary=true")
    recorded = None
    if args.init_from is None:
        recorded = recorded_run(args.model_dir)
        args.init_from = recorded["init_from"]
    run_config = load_finetune_config(
        None if recorded and not args.config else config_path(args.config), overrides,
        task=args.task, steps=args.steps, model_dir=args.model_dir,
        defaults=recorded["config"] if recorded and not args.config else None)
    modules = list(dict.fromkeys(list(run_config.data.modules) + list(args.module)))
    import_modules(modules)
    run_config.data.modules = modules
    init = None if args.init_from == RANDOM_INIT else resolve_init(args.init_from)
    if run_config.data.files:
        from t5pre.tasks.files import check_files

        check_files(run_config.data.files)  # reported before TensorFlow loads
    elif run_config.data.task:
        from t5pre.data.registry import get_downstream_task

        get_downstream_task(run_config.data.task)  # reported before TensorFlow loads

    from t5pre.cli.pretrain import training_strategy

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs (None on JAX).
    strategy = training_strategy(run_config)
    result = finetune(run_config, args.model_dir, init=init, strategy=strategy,
                      modules=modules)
    if result.best_score is not None:
        print(f"best {result.best_metric} {result.best_score:.3f} at step {result.best_step}: "
              f"{os.path.join(args.model_dir, 'best')}")
    return 0 if result.train.step >= run_config.training.steps else 1


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()
