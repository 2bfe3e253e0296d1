"""What a resume costs: time from building the training input pipeline to its first batch, at
consumed positions of a span-corruption task (512/114, T5's settings).

* the cached, random-access pipeline (``data.cache_dir``): positions 0, 1e5, 1e6 and 1e7
  examples (the position is fast-forwarded, nothing is trained);
* with ``--skip-path``, also the on-the-fly pipeline, which re-runs tokenization and corruption
  for every consumed example (``skip``): measured at two small positions, its seconds per
  skipped example extrapolate to any step (e.g. T5-base, batch 256, step 100k = 25.6M examples).

The cache (of ``--task``, default the embedded default corpus) is built first, with one worker,
which also gives the cache's build throughput and size per token. The LAST line is
``resume cost: far/near ratio R`` (first-batch time at 1e7 over that at 0).

Usage::

    python benchmarks/resume_cost.py [--skip-path] [--cache DIR] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LENGTHS = {"inputs": 512, "targets": 114}
POSITIONS = (0, 10**5, 10**6, 10**7)


def _first_batch_seconds(task, start, batch_size, cache):
    import tensorflow as tf

    from t5pre.training.data import make_dataset_fn

    began = time.perf_counter()
    fn = make_dataset_fn(task, LENGTHS, split="train", global_batch_size=batch_size, pack=True,
                         shuffle=True, seed=0, start_examples=start, cache=cache)
    next(iter(fn(tf.distribute.InputContext())))
    return time.perf_counter() - began


def _cache_size(directory):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(directory) for f in files)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="default_span_corruption")
    parser.add_argument("--cache", help="an existing cache of the task (default: build one)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--skip-path", action="store_true",
                        help="also measure the on-the-fly (skip) pipeline and extrapolate")
    args = parser.parse_args(argv)

    import t5pre
    from t5pre.data.cache import build_cache, open_cache

    task = t5pre.get_task(args.task)
    cache = args.cache
    if cache is None:
        cache = os.path.join(tempfile.mkdtemp(prefix="t5pre-resume-"), "cache")
        began, cpu = time.perf_counter(), time.process_time()
        manifest = build_cache(task, cache, splits=["train"], workers=1)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        tokens = manifest["splits"]["train"]["tokens"]["targets"]
        print(f"cache build ({args.task}, train, 1 worker): {tokens:,} tokens in {wall:.1f} s = "
              f"{tokens / wall:,.0f} tokens/s ({tokens / cpu:,.0f} tokens/cpu-s, TF start-up "
              f"included); {_cache_size(cache) / tokens:.2f} bytes/token on disk")
    cache = open_cache(cache, task=task)
    print(f"first batch (global batch {args.batch_size}, {LENGTHS}) after building the "
          "pipeline, cached random-access path:")
    _first_batch_seconds(task, 0, args.batch_size, cache)  # imports, traces: not a resume cost
    seconds = {}
    for position in POSITIONS:
        seconds[position] = _first_batch_seconds(task, position, args.batch_size, cache)
        print(f"position {position:>12,}: {seconds[position]:.3f} s")
        sys.stdout.flush()
    if args.skip_path:
        near, far = 0, 20_000
        t_near = _first_batch_seconds(task, near, args.batch_size, None)
        t_far = _first_batch_seconds(task, far, args.batch_size, None)
        per_example = max(t_far - t_near, 1e-9) / (far - near)
        print(f"on-the-fly (skip) path: position {near}: {t_near:.2f} s, {far:,}: {t_far:.2f} s "
              f"-> {per_example * 1e6:.0f} us per skipped example; 25.6M examples (T5-base, batch "
              f"256, step 100k) ~ {per_example * 25.6e6 / 60:,.0f} min per restart")
    print(f"resume cost: far/near ratio {seconds[POSITIONS[-1]] / seconds[POSITIONS[0]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
