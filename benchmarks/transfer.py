"""Does pretraining pay off? Fine-tune the same tiny T5 twice -- from a t5pre pretraining
checkpoint and from random initialisation, same architecture, steps, data order and seed -- and
compare the downstream scores.

Modes:

* ``debian`` (real data): pretraining on the *documents* of ``debian-descriptions/train.jsonl``
  (registered with ``register_text_pretraining_task``, JSONL key ``document``), fine-tuning on
  ``--train-examples`` of its (document -> synopsis) pairs drawn at random (2,000 by default: the
  low-resource setting where pretraining should matter most), ROUGE on ``--eval-examples``
  validation rows in a random order.
* ``default`` (no data needed): the packaged pretraining task ``default_<objective>`` over the
  embedded docstring corpus, fine-tuning on ``default_summarize``.

    python benchmarks/transfer.py --mode debian --data-dir ../shared/data --work-dir /tmp/transfer
    python benchmarks/transfer.py --mode default --work-dir /tmp/transfer

The objective (``--objective``) defaults to BERT-style i.i.d. denoising (15% of tokens masked,
targets = the whole original chunk), not T5's span corruption, because at the scale a CPU allows
(a 2+2-layer, d_model 128 model, ~10-25M pretraining tokens) span corruption does not teach the
model to read its encoder: ``benchmarks/encoder_probe.py`` finds its loss almost unchanged when
each example gets another example's inputs, and fine-tuning from it gives a better token loss but
generic outputs, no ROUGE gain. Reconstructing the whole input makes the decoder depend on the
encoder from the first step. ``--objective span_corruption`` runs the T5 comparison.

Runs resume: re-running with the same ``--work-dir`` reuses finished pretraining (per objective)
and fine-tuning runs (only the scoring is redone). Prints a table and writes
``WORK_DIR/MODE/results-OBJECTIVE[-sampleN].json``; exits 1 unless the pretrained start is
*clearly* ahead: the low end of its 95% bootstrap interval on ROUGE-Lsum above the high end of
the random start's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Small enough that pretraining + two fine-tunes + scoring take ~10-15 minutes on 2 CPU cores.
BENCH_MODEL = {"d_model": 128, "num_heads": 4, "d_kv": 32, "d_ff": 256,
               "num_encoder_layers": 2, "num_decoder_layers": 2, "dropout_rate": 0.0}

MODES = {
    "debian": {"finetune_task": "debian_descriptions", "pretrain_task": "debian_documents_spans"},
    # the embedded corpus has one packaged pretraining task per objective: pretrain_task_name()
    "default": {"finetune_task": "default_summarize"},
}

# Pretraining (inputs, targets) lengths per objective. Span corruption (0.15, mean 3) of a 70-token
# chunk fills exactly 64 inputs and 14 targets; i.i.d. denoising reconstructs the whole chunk, so
# its targets are as long as its inputs (63 tokens + EOS).
PRETRAIN_LENGTHS = {"span_corruption": (64, 14), "prefix_lm": (64, 14), "ul2": (64, 14),
                    "iid_denoising": (64, 64)}


def pretrain_task_name(mode: str, objective: str) -> str:
    """The pretraining task (or UL2 mixture) of ``mode`` for ``objective``: the Debian documents
    are registered under one name with the chosen objective; the embedded corpus has one packaged
    task per objective (``default_span_corruption``, ``default_iid_denoising``, ...)."""
    return MODES["debian"]["pretrain_task"] if mode == "debian" else f"default_{objective}"


def _register_debian_pretraining(data_dir: str, objective: str) -> None:
    from t5pre.tasks.pretraining import register_text_pretraining_task

    root = os.path.join(data_dir, "debian-descriptions")
    files = {"train": [os.path.join(root, "train.jsonl")],
             "validation": [os.path.join(root, "validation.jsonl")]}
    for paths in files.values():
        if not os.path.isfile(paths[0]):
            sys.exit(f"transfer: {paths[0]} not found (pass --data-dir with debian-descriptions/)")
    register_text_pretraining_task(MODES["debian"]["pretrain_task"], files, text_key="document",
                                   objective=objective)


def _register_low_resource_task(data_dir: str, work_dir: str, n: int) -> str:
    """``debian_descriptions`` with only ``n`` training pairs drawn at random, scored on the
    validation split in a random order (both seed 0): the low-resource setting where what
    pretraining learnt matters most. Random draws, not the first rows: the files are sorted by
    package name, so their heads are all ``a*`` packages (hundreds of "Apache ..." synopses),
    and fine-tuning scores only the first ``--eval-examples`` validation rows."""
    import random

    from t5pre.tasks.summarization import register_jsonl_summarization_task

    root = os.path.join(data_dir, "debian-descriptions")
    os.makedirs(work_dir, exist_ok=True)
    files = {}
    for split, count in (("train", n), ("validation", None)):
        with open(os.path.join(root, f"{split}.jsonl"), encoding="utf-8") as f:
            lines = f.readlines()
        lines = random.Random(0).sample(lines, min(count or len(lines), len(lines)))
        files[split] = os.path.join(work_dir, f"{split}-sample-{count or 'all'}.jsonl")
        with open(files[split], "w", encoding="utf-8") as f:
            f.writelines(lines)
    name = f"debian_descriptions_sample_{n}"
    register_jsonl_summarization_task(name, files, replace=True)
    return name


def pretrain_config(args, task: str):
    from t5pre.training.config import load_config

    inputs, targets = PRETRAIN_LENGTHS[args.objective]
    run = {
        "model": {"name": "tiny", "overrides": dict(BENCH_MODEL)},
        "data": {("mixture" if args.objective == "ul2" else "task"): task,
                 "sequence_length": {"inputs": inputs, "targets": targets}, "pack": False,
                 "eval_split": None},
        "training": {"batch_size": args.pretrain_batch_size, "steps": args.pretrain_steps,
                     "seed": 0,
                     "log_every": max(args.pretrain_steps // 5, 1), "eval_every": 0,
                     "checkpoint_every": args.pretrain_steps, "keep_checkpoints": 1,
                     "text_samples": 0},
        "optimizer": {"name": "adamw", "learning_rate": 3e-3, "warmup_steps": 30,
                      "final_learning_rate": 1e-4},
        "strategy": {"name": "one_device"},
    }
    return load_config(None, defaults=run)


def finetune_config(args, task: str, work: str):
    from t5pre.training.config import load_finetune_config

    overrides = [
        f"data.task={task}", "data.sequence_length.inputs=64", "data.sequence_length.targets=16",
        f"training.batch_size={args.batch_size}", f"training.steps={args.finetune_steps}",
        "training.seed=0", f"training.log_every={max(args.finetune_steps // 5, 1)}",
        f"training.eval_every={args.eval_every or args.finetune_steps}", "training.eval_steps=4",
        f"training.checkpoint_every={args.finetune_steps}", "training.keep_checkpoints=1",
        "optimizer.name=adamw", f"optimizer.learning_rate={args.finetune_lr}",
        "optimizer.warmup_steps=50",
        "optimizer.final_learning_rate=1e-4", "strategy.name=one_device",
        f"finetune.eval_examples={args.eval_examples}", "finetune.eval_batch_size=50",
        "finetune.metric=rougeLsum",
    ]
    return load_finetune_config(None, overrides, model_dir=work)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(MODES), default="debian")
    p.add_argument("--data-dir", default=os.environ.get("T5PRE_DATA_DIR", "../shared/data"),
                   help="holds debian-descriptions/ (debian mode)")
    p.add_argument("--work-dir", default="/tmp/t5pre-transfer")
    p.add_argument("--objective", default="iid_denoising", choices=sorted(PRETRAIN_LENGTHS),
                   help="the pretraining objective (default: i.i.d. denoising, which teaches this "
                        "tiny model to read its encoder within CPU minutes; T5's span corruption "
                        "does not, see the module docstring)")
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="fine-tuning batch size")
    p.add_argument("--pretrain-batch-size", type=int, default=64,
                   help="pretraining batch size (64 x 78 tokens trains ~2x faster per token "
                        "than 16 on 2 CPU cores)")
    p.add_argument("--eval-examples", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=250,
                   help="fine-tuning steps between validation decodes (0: only at the end)")
    p.add_argument("--finetune-lr", type=float, default=1e-3,
                   help="peak AdamW learning rate of both fine-tunes")
    p.add_argument("--train-examples", type=int, default=2000,
                   help="debian mode: fine-tune on N training pairs drawn at random "
                        "(low-resource transfer, default 2000); 0: all 27k")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["T5PRE_DATA_DIR"] = os.path.abspath(args.data_dir)

    from t5pre.models.io import read_model_config
    from t5pre.finetune import finetune
    from t5pre.models.store import resolve_init
    from t5pre.training.trainer import Trainer

    mode = {**MODES[args.mode], "pretrain_task": pretrain_task_name(args.mode, args.objective)}
    if args.mode == "debian":
        _register_debian_pretraining(args.data_dir, args.objective)
    root = os.path.join(args.work_dir, args.mode)
    pre_dir = os.path.join(root, f"pretrain-{args.objective}")
    sampled = bool(args.train_examples) and args.mode == "debian"
    if sampled:
        mode = {**mode, "finetune_task": _register_low_resource_task(
            args.data_dir, root, args.train_examples)}
    suffix = f"-sample{args.train_examples}" if sampled else ""
    quiet = lambda msg: print("   ", msg, flush=True)  # noqa: E731

    timings = {}
    t0 = time.perf_counter()
    print(f"[1/3] pretraining {mode['pretrain_task']} for {args.pretrain_steps} steps -> {pre_dir}")
    pre = Trainer(pretrain_config(args, mode["pretrain_task"]), pre_dir, log=quiet).train()
    timings["pretrain_s"] = time.perf_counter() - t0

    results = {}
    for name, init in (("pretrained", resolve_init(pre_dir)), ("random init", None)):
        t1 = time.perf_counter()
        out = os.path.join(root, ("ft-random" if init is None else f"ft-{args.objective}") + suffix)
        print(f"[{2 if init else 3}/3] fine-tuning {mode['finetune_task']} from {name} for "
              f"{args.finetune_steps} steps -> {out}")
        cfg = finetune_config(args, mode["finetune_task"], out)
        r = finetune(cfg, out, init=init,
                     model_config=read_model_config(pre_dir), log=quiet)
        scores = _final_scores(r, out)
        results[name] = {"scores": scores, "model_dir": out,
                         "rougeLsum_curve": [[step, sc.get("rougeLsum")]
                                             for step, sc in r.eval_history],
                         "final_train_loss": r.train.last_metrics.get("loss"),
                         "validation_token_loss": r.train.last_metrics.get("eval_loss")}
        timings[f"finetune_{name.split()[0]}_s"] = time.perf_counter() - t1

    keys = ("rouge1", "rouge2", "rougeLsum")
    print(f"\n{mode['finetune_task']}: {args.eval_examples} validation examples, greedy; "
          f"tiny T5 {BENCH_MODEL['d_model']}d x {BENCH_MODEL['num_encoder_layers']}+"
          f"{BENCH_MODEL['num_decoder_layers']} layers; pretrain {args.objective} "
          f"{args.pretrain_steps} steps, "
          f"fine-tune {args.finetune_steps} steps, batch {args.batch_size}")
    print(f"{'start':<14}" + "".join(f"{k:>11}" for k in keys) + f"{'val loss':>11}")
    for name, r in results.items():
        loss = r["validation_token_loss"]
        print(f"{name:<14}" + "".join(f"{r['scores'].get(k, float('nan')):>11.2f}" for k in keys)
              + f"{loss if loss is not None else float('nan'):>11.3f}")
    curves = {name: dict(r["rougeLsum_curve"]) for name, r in results.items()}
    steps = sorted(set().union(*curves.values()))
    if len(steps) > 1:
        print("\nROUGE-Lsum during fine-tuning")
        print(f"{'step':>6}" + "".join(f"{name:>14}" for name in curves))
        for step in steps:
            print(f"{step:>6}" + "".join(f"{curves[n].get(step, float('nan')):>14.2f}"
                                         for n in curves))
    gain = results["pretrained"]["scores"]["rougeLsum"] - results["random init"]["scores"]["rougeLsum"]
    pre_low = results["pretrained"]["scores"].get("rougeLsum_low", float("nan"))
    rand_high = results["random init"]["scores"].get("rougeLsum_high", float("nan"))
    clearly = pre_low > rand_high
    print(f"pretraining gain: {gain:+.2f} ROUGE-Lsum "
          f"({'clearly ahead' if clearly else 'NOT clearly ahead'}: pretrained 95% interval low "
          f"{pre_low:.2f} vs random-init high {rand_high:.2f}); time "
          + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f"results-{args.objective}{suffix}.json"), "w") as f:
        json.dump({"mode": args.mode, "args": vars(args), "model": BENCH_MODEL,
                   "pretrain_final_loss": pre.last_metrics.get("loss"),
                   "results": results, "rougeLsum_gain": gain, "clearly_ahead": clearly,
                   "timings": timings}, f, indent=2)
    return 0 if clearly else 1


def _final_scores(result, model_dir) -> dict:
    """Scores of the last evaluation (this run's, or read back from best/ when resumed)."""
    if result.eval_history:
        return result.eval_history[-1][1]
    from t5pre.training.actions import read_best_info

    info = read_best_info(os.path.join(model_dir, "best")) or {}
    return info.get("scores", {})


if __name__ == "__main__":
    sys.exit(main())
