"""``t5pre evaluate``: score a model on a downstream task (decode, postprocess, metrics).

    t5pre evaluate --model-dir runs/ft --task default_summarize
    t5pre evaluate --model-dir runs/ft/best --task debian_descriptions --beam 4 \\
        --max-examples 200 --out results/debian.json

Prints a table of the scores and writes FILE.json (scores, settings) and
FILE.predictions.jsonl (one row per example: input, target, prediction and the postprocessed
texts the metrics saw). ``--model-dir`` may be a training model directory (latest checkpoint or
``--checkpoint N``), a fine-tuning run's ``best/`` or any ``save_pretrained`` directory.
"""

from __future__ import annotations

import os

from t5pre.cli import doc_description
from t5pre.cli.finetune import add_module_argument, import_modules

DEFAULT_INPUT_LENGTH = 512
DEFAULT_TARGET_LENGTH = 128


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="decode a task's split and score it with the task's metrics",
        **doc_description(__doc__))
    parser.add_argument("--model-dir", required=True,
                        help="training model dir, fine-tuning best/ dir or save_pretrained dir")
    parser.add_argument("--checkpoint", help="checkpoint step of a training dir (default: latest)")
    parser.add_argument("--task", help="task name (default: the task the model dir was "
                                       "fine-tuned on)")
    parser.add_argument("--split", default="validation",
                        help="the task's split to decode and score (default: validation)")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument("--length-penalty", type=float, default=0.6,
                        help="beam search alpha (T5: 0.6)")
    parser.add_argument("--max-examples", type=int, help="score only the first N examples")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-length", type=int,
                        help="encoder tokens (default: the model dir's fine-tuning length, "
                             f"else {DEFAULT_INPUT_LENGTH})")
    parser.add_argument("--target-length", type=int,
                        help="target tokens = longest decode (default: the fine-tuning length, "
                             f"else {DEFAULT_TARGET_LENGTH})")
    parser.add_argument("--out", help="scores JSON (default: MODEL_DIR/eval/TASK-SPLIT.json); the "
                                      "predictions go beside it as .predictions.jsonl")
    parser.add_argument("--predictions", help="predictions JSONL path (default: beside --out)")
    parser.add_argument("--use-model-vocabulary", action="store_true",
                        help="tokenise the task's text with the model's vocabulary when it "
                             "differs from the task's")
    add_module_argument(parser)
    parser.set_defaults(func=run)


def _trained_lengths(loaded, model_dir, task_name):
    """(inputs, targets) the model was fine-tuned with on this task, when known."""
    from t5pre.training.finetune import read_best_info

    info = read_best_info(model_dir)
    if info and info.get("task") == task_name and info.get("sequence_length"):
        lengths = info["sequence_length"]
        return lengths.get("inputs"), lengths.get("targets")
    run_config = loaded.run_config
    if run_config is not None and run_config.data.task == task_name:
        lengths = run_config.data.sequence_length
        return lengths.inputs, lengths.targets
    return None, None


def _default_task(loaded, model_dir):
    from t5pre.training.finetune import read_best_info

    info = read_best_info(model_dir)
    if info and info.get("task"):
        return info["task"]
    if loaded.run_config is not None:
        return loaded.run_config.data.task
    return None


def run(args):
    from t5pre.errors import ConfigError

    import_modules(args.module)
    for flag, value, least in (("--max-examples", args.max_examples, 1),
                               ("--batch-size", args.batch_size, 1), ("--beam", args.beam, 1),
                               ("--input-length", args.input_length, 2),
                               ("--target-length", args.target_length, 1)):
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    from t5pre.evaluation.evaluate import (DecodeOptions, TaskEvaluator, check_vocabulary,
                                           format_scores, get_downstream_task, write_results)
    from t5pre.evaluation.predict import load_for_inference

    if args.task:  # an unknown task fails before the (slow) model load
        get_downstream_task(args.task)
    checkpoint = args.checkpoint
    if checkpoint is not None and str(checkpoint).isdigit():
        checkpoint = int(checkpoint)
    loaded = load_for_inference(args.model_dir, checkpoint)
    task_name = args.task or _default_task(loaded, args.model_dir)
    if not task_name:
        raise ConfigError(f"{args.model_dir}: the model dir does not say which task it was "
                          "fine-tuned on; pass --task NAME")
    task = get_downstream_task(task_name)
    task = check_vocabulary(loaded.vocabulary, task, args.model_dir,
                            use_model_vocabulary=args.use_model_vocabulary)
    inputs, targets = _trained_lengths(loaded, args.model_dir, task_name)
    inputs = args.input_length or inputs or DEFAULT_INPUT_LENGTH
    targets = args.target_length or targets or DEFAULT_TARGET_LENGTH
    options = DecodeOptions(beam=args.beam, length_penalty=args.length_penalty,
                            max_length=targets, batch_size=args.batch_size)
    evaluator = TaskEvaluator(task, loaded.vocabulary, split=args.split,
                              sequence_length={"inputs": inputs, "targets": targets},
                              max_examples=args.max_examples, options=options)
    result = evaluator.evaluate(loaded.model)
    out = args.out or os.path.join(args.model_dir, "eval", f"{task.name}-{args.split}.json")
    extra = {"model_dir": os.path.abspath(args.model_dir), "checkpoint": loaded.checkpoint,
             "decoding": {"beam": options.beam, "length_penalty": options.length_penalty,
                          "max_length": options.max_length},
             "sequence_length": {"inputs": inputs, "targets": targets}}
    out, predictions = write_results(result, out, args.predictions, extra=extra)
    print(f"{task.name} / {args.split}: {len(result.rows)} examples, "
          f"{'greedy' if options.beam == 1 else f'beam {options.beam}'} decoding, "
          f"{result.seconds:.1f}s")
    print(format_scores(result.scores, result.main_metric))
    print(f"scores: {out}\npredictions: {predictions}")
    return 0
