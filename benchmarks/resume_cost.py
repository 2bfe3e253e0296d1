"""What a resume costs: time from building the training input pipeline to its first batch, at
consumed positions of a span-corruption task (512/114, T5's settings).

* the cached, random-access pipeline (``data.cache_dir``): positions 0, 1e5, 1e6 and 1e7
  examples (the position is fast-forwarded, nothing is trained);
* with ``--implicit``, also no cache configured (what a run without ``data.cache_dir`` does:
  the task's implicit cache under ``$T5PRE_CACHE_DIR``, built on first use): positions 0 and
  1e7. (The skip-based on-the-fly resume this script once extrapolated -- ~617 us per consumed
  example -- is gone: every run reads by index.)

The cache (of ``--task``, default the embedded default corpus) is built first, with one worker,
which also gives the cache's build throughput and size per token. The LAST line is
``resume cost: far/near ratio R`` (first-batch time at 1e7 over that at 0).

Usage::

    python benchmarks/resume_cost.py [--implicit] [--cache DIR] [--batch-size 256]
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
    parser.add_argument("--implicit", action="store_true",
                        help="also measure a run with no cache configured (implicit cache)")
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
    if args.implicit:
        began = time.perf_counter()
        _first_batch_seconds(task, 0, args.batch_size, None)  # finds or builds the implicit cache
        print(f"no cache configured: first use (implicit cache found or built) "
              f"{time.perf_counter() - began:.1f} s")
        for position in (0, POSITIONS[-1]):
            print(f"no cache configured, position {position:>12,}: "
                  f"{_first_batch_seconds(task, position, args.batch_size, None):.3f} s")
    print(f"resume cost: far/near ratio {seconds[POSITIONS[-1]] / seconds[POSITIONS[0]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
