"""``t5pre evaluate``: score a model on a downstream task (decode, postprocess, metrics).

    t5pre evaluate --model-dir runs/ft --task default_summarize
    t5pre evaluate --model-dir runs/ft/best --task debian_descriptions --beam-size 4 \\
        --max-examples 200 --out results/debian.json

Prints a table of the scores and writes FILE.json (scores, settings) and
FILE.predictions.jsonl (one row per example: input, target, prediction and the postprocessed
texts the metrics saw). ``--model-dir`` may be a training model directory (latest checkpoint or
``--checkpoint N``), a fine-tuning run's ``best/`` or any ``save_pretrained`` directory.

A fine-tuned directory (``RUN/`` or ``RUN/best/``) says what it was fine-tuned on: the task,
or the files (``--train-files`` / ``--validation-files``, fields, prefix, format), the lengths,
``--use-model-vocabulary`` and ``--module`` values; ``t5pre evaluate --model-dir RUN/best``
needs none of them repeated.
"""

from __future__ import annotations

import os

from t5pre.cli import doc_description
from t5pre.cli.common import add_module_argument, import_modules


def register(subparsers):
    from t5pre.cli.inference import MODEL_HELP, add_decode_arguments, add_model_arguments

    parser = subparsers.add_parser(
        "evaluate", help="decode a task's split and score it with the task's metrics",
        **doc_description(__doc__))
    add_model_arguments(parser, MODEL_HELP)
    parser.add_argument("--task", help="task name (default: the task the model dir was "
                                       "fine-tuned on)")
    parser.add_argument("--split", default="validation",
                        help="the task's split to decode and score (default: validation)")
    add_decode_arguments(parser)
    parser.add_argument("--max-examples", type=int, metavar="N",
                        help="score only the first N examples (default: all)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N",
                        help="examples decoded per batch (default: 32)")
    parser.add_argument("--out", metavar="FILE.json",
                        help="scores JSON (default: MODEL_DIR/eval/TASK-SPLIT.json); the "
                             "predictions go beside it as .predictions.jsonl")
    parser.add_argument("--predictions", metavar="FILE.jsonl",
                        help="predictions JSONL path (default: beside --out)")
    parser.add_argument("--use-model-vocabulary", action="store_true",
                        help="tokenise the task's text with the model's vocabulary when it "
                             "differs from the task's")
    add_module_argument(parser)
    parser.set_defaults(func=run)


def import_recorded_modules(model_dir: str, given) -> None:
    """Imports `--module` values, then those the fine-tuning run recorded (finetune.json /
    best.json `modules`), so that a task registered by user code is found again."""
    from t5pre.errors import ConfigError
    from t5pre.models.store import read_run_info

    import_modules(given)
    for name in (read_run_info(model_dir) or {}).get("modules") or []:
        if name not in given:
            try:
                import_modules([name])
            except ConfigError as e:
                raise ConfigError(f"{model_dir}: fine-tuning recorded {e}; make it importable "
                                  "(e.g. run from the directory that holds it)") from None


def _lengths_for(loaded, task_name) -> dict:
    """The lengths the model was fine-tuned at, when it was fine-tuned on this task."""
    return loaded.sequence_length if loaded.task == task_name else None


def recorded_files_task(info, task_name, vocabulary):
    """The fine-tuning run's files task (finetune.json / best.json ``data``) when ``task_name``
    is it, over the model's vocabulary; else None."""
    spec = (info or {}).get("data")
    if not spec or spec.get("task") != task_name:
        return None
    from t5pre.tasks.files import files_task

    return files_task(spec, vocabulary)


def _check_outputs(out, predictions, out_flag) -> None:
    """The scores file and the predictions file (those known: None = not yet) can be written:
    one line and exit 2 or 3 before the split is decoded, not a traceback after."""
    from t5pre.evaluation.evaluate import predictions_path_for
    from t5pre.files import check_output_path

    if out is not None:
        check_output_path(out, flag=out_flag)
    if predictions is not None:
        check_output_path(predictions, flag="--predictions")
    elif out is not None:
        check_output_path(predictions_path_for(out), flag=out_flag)


def run(args):
    from t5pre.cli.inference import decode_settings
    from t5pre.errors import ConfigError
    from t5pre.models.store import read_run_info

    import_recorded_modules(args.model_dir, args.module)
    info = read_run_info(args.model_dir) or {}
    files_task_name = (info.get("data") or {}).get("task")
    for flag, value in (("--max-examples", args.max_examples), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    settings = decode_settings(args)
    _check_outputs(args.out, args.predictions, "--out")  # before the (slow) model load
    from t5pre.data.registry import get_downstream_task
    from t5pre.data.task_vocabulary import check_vocabulary
    from t5pre.evaluation.evaluate import TaskEvaluator, format_scores, write_results
    from t5pre.models.store import load_for_inference

    if args.task and args.task != files_task_name:  # an unknown task fails before the model load
        get_downstream_task(args.task)
    loaded = load_for_inference(args.model_dir, args.checkpoint)
    task_name = args.task or loaded.task
    if not task_name:
        raise ConfigError(f"{args.model_dir}: the model dir does not say which task it was "
                          "fine-tuned on; pass --task NAME")
    task = (recorded_files_task(info, task_name, loaded.vocabulary)
            or get_downstream_task(task_name))
    # --use-model-vocabulary given to finetune holds for the task it fine-tuned on.
    recorded_choice = bool(info.get("use_model_vocabulary")) and task_name == info.get("task")
    task = check_vocabulary(loaded.vocabulary, task, args.model_dir,
                            use_model_vocabulary=args.use_model_vocabulary or recorded_choice)
    settings = settings.resolved_for(_lengths_for(loaded, task_name))
    sequence_length = {"inputs": settings.max_input_length,
                       "targets": settings.max_decode_length}
    evaluator = TaskEvaluator(task, loaded.vocabulary, split=args.split,
                              sequence_length=sequence_length, max_examples=args.max_examples,
                              settings=settings, batch_size=args.batch_size)
    out = args.out or os.path.join(args.model_dir, "eval", f"{task.name}-{args.split}.json")
    if not args.out:  # the default, MODEL_DIR/eval/TASK-SPLIT.json, is known only now
        _check_outputs(out, args.predictions, None)
    result = evaluator.evaluate(loaded.model, progress=True)
    extra = {"model_dir": os.path.abspath(args.model_dir), "checkpoint": loaded.checkpoint,
             "decoding": {"beam": settings.beam_size, "length_penalty": settings.length_penalty,
                          "max_length": settings.max_decode_length},
             "sequence_length": sequence_length}
    out, predictions = write_results(result, out, args.predictions, extra=extra)
    print(f"{task.name} / {args.split}: {len(result.rows)} examples, "
          f"{settings.describe()} decoding, {result.seconds:.1f}s")
    print(format_scores(result.scores, result.main_metric))
    print(f"scores: {out}\npredictions: {predictions}")
    return 0
