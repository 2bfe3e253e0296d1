"""Pretraining throughput of a run config: input pipeline alone vs the full training step.

Reports, for the packaged default config (or ``--config``):

* ``pipeline``: examples/s and tokens/s of the training input pipeline alone (task ->
  features -> batches), read as fast as possible, one input pipeline;
* ``training``: tokens/s (input + target, real tokens) and target tokens/s of the Trainer's
  steady state (the first window, which includes tracing, is excluded), step time, and the
  fraction of the step time spent waiting for the next batch (``data wait``);
(A resume costs what a start costs: the pipeline reads by global example index,
``benchmarks/resume_cost.py`` measures it.)

Usage::

    .venv/bin/python benchmarks/pretrain_throughput.py [--config FILE] [--set k=v ...]
        [--steps 20] [--pipeline-batches 40]

Tokens are counted from the padding masks, so padding is excluded. On a shared machine the
figures move with the load: compare runs taken back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="run config (default: the packaged default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--steps", type=int, default=20, help="measured training steps")
    p.add_argument("--pipeline-batches", type=int, default=40)
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from t5pre.training.config import load_config, packaged_config_path

    overrides = ["training.eval_every=0", "training.checkpoint_every=1000000",
                 f"training.log_every={args.steps}", f"training.steps={2 * args.steps}",
                 "strategy.name=one_device", *args.overrides]
    cfg = load_config(args.config or packaged_config_path("default"), overrides)

    import tensorflow as tf

    from t5pre.training.data import get_task_or_mixture, make_dataset_fn
    from t5pre.training.trainer import Trainer

    d, t = cfg.data, cfg.training
    lengths = {"inputs": d.sequence_length.inputs, "targets": d.sequence_length.targets}
    task = get_task_or_mixture(d)

    # 1. The pipeline alone ----------------------------------------------------------------
    fn = make_dataset_fn(task, lengths, split=d.train_split, global_batch_size=t.batch_size,
                         pack=d.pack, shuffle=d.shuffle, seed=cfg.data_seed)
    it = iter(fn(tf.distribute.InputContext()))
    next(it)  # start-up (the token cache found or built once) is not throughput
    examples = tokens = 0
    start = time.perf_counter()
    for _ in range(args.pipeline_batches):
        b = next(it)
        examples += int(b["decoder_loss_weights"].shape[0])
        tokens += int(tf.reduce_sum(b["encoder_padding_mask"])) + \
            int(tf.reduce_sum(tf.cast(b["decoder_loss_weights"] > 0, tf.int32)))
    pipe_s = time.perf_counter() - start
    pipeline = {"examples_per_sec": examples / pipe_s, "tokens_per_sec": tokens / pipe_s}

    # 2. Training ----------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = Trainer(cfg, model_dir, task=task, log=lambda msg: None)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = trainer.train()
        cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    m = result.last_metrics
    training = {k: m[k] for k in ("tokens_per_sec", "target_tokens_per_sec", "examples_per_sec",
                                  "step_time", "data_wait_fraction")}

    model = trainer.model.config
    print(f"config: {args.config or 'default.yaml'}  model: d_model {model.d_model}, "
          f"{model.num_encoder_layers}+{model.num_decoder_layers} layers  batch {t.batch_size} x "
          f"({lengths['inputs']}, {lengths['targets']})  threads: "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    print(f"pipeline only : {pipeline['examples_per_sec']:8.1f} examples/s  "
          f"{pipeline['tokens_per_sec']:10.0f} tokens/s")
    print(f"training      : {training['examples_per_sec']:8.1f} examples/s  "
          f"{training['tokens_per_sec']:10.0f} tokens/s  "
          f"({training['target_tokens_per_sec']:.0f} target tokens/s)  "
          f"step {training['step_time'] * 1000:.0f} ms, data wait "
          f"{100 * training['data_wait_fraction']:.1f}% of the step")
    print(f"cpu use       : {cpu_per_wall:.2f} cores busy on average during training "
          f"(of {os.cpu_count()}; lower than the core count means the machine was shared)")
    if args.json:
        print(json.dumps({"pipeline": pipeline, "training": training,
                          "cpu_cores_busy": cpu_per_wall}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
