"""Grain + ArrayRecord against our own random-access files read through tf.data, one core.

1. Random document reads: ``TokenStore.document(i)`` over the cache's memory-mapped shards
   against ``grain.sources.ArrayRecordDataSource[i]`` over the same documents written one record
   each (uint16 bytes), at random indices.
2. The whole random-access pipeline (global indices -> chunks -> numpy span corruption -> model
   features, batches of 256, 512/114) driven by tf.data (``t5pre.data.random_access.tf_dataset``,
   what training uses) and by a Grain ``MapDataset`` calling the same batch function.

Grain and ArrayRecord are not project dependencies; install them apart, e.g.
``pip install --no-deps --target /tmp/grain_ref grain array_record portpicker`` and run with
``PYTHONPATH=/tmp/grain_ref``; without them their rows print "skipped".

Usage::

    python benchmarks/random_access_read.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LENGTHS = {"inputs": 512, "targets": 114}


def _rate(fn, seconds):
    fn()
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        count += fn()
    return count / (time.process_time() - cpu), count / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import t5pre
    from t5pre.data.cache import build_cache, open_cache
    from t5pre.data.random_access import RandomAccessTask, tf_dataset

    task = t5pre.get_task("default_span_corruption")
    workdir = tempfile.mkdtemp(prefix="t5pre-read-")
    build_cache(task, os.path.join(workdir, "cache"), splits=["train"])
    store = open_cache(os.path.join(workdir, "cache"), task=task).split("train")
    rng = np.random.default_rng(0)
    order = rng.integers(0, store.num_documents, size=1 << 20)
    state = {"i": 0}

    def next_indices(n=1000):
        i = state["i"]
        state["i"] = (i + n) % (len(order) - n)
        return order[i:i + n]

    def memmap_reads():
        for j in next_indices():
            store.document(int(j))
        return 1000

    rows = [("documents, memory-mapped TokenStore", *_rate(memmap_reads, args.seconds))]
    try:
        import grain
        from array_record.python import array_record_module
    except ImportError as e:
        grain = None
        skipped = f"skipped: grain/array_record not importable ({e})"
    if grain is not None:
        path = os.path.join(workdir, "docs.array_record")
        writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
        for i in range(store.num_documents):
            writer.write(store.document(i).astype("<u2").tobytes())
        writer.close()
        source = grain.sources.ArrayRecordDataSource([path])

        def array_record_reads():
            for j in next_indices():
                np.frombuffer(source[int(j)], "<u2")
            return 1000

        rows.append(("documents, Grain ArrayRecordDataSource", *_rate(array_record_reads,
                                                                       args.seconds)))

    pipeline = RandomAccessTask(task, store, LENGTHS, "train", seed=0)
    batch = args.batch_size
    iterator = iter(tf_dataset(pipeline, start_examples=0, global_batch_size=batch, pack=True))

    def tf_batches():
        next(iterator)
        return batch

    rows.append(("examples, tf.data over our files", *_rate(tf_batches, args.seconds)))
    if grain is not None:
        batches = grain.MapDataset.range(1 << 40).map(
            lambda k: pipeline.features(np.arange(k * batch, (k + 1) * batch), pack=True))
        grain_iterator = iter(batches.to_iter_dataset())

        def grain_batches():
            next(grain_iterator)
            return batch

        rows.append(("examples, Grain MapDataset over our files", *_rate(grain_batches,
                                                                          args.seconds)))
    print(f"{'what':<44} {'per CPU-s':>12} {'per s':>12}")
    for name, per_cpu, per_wall in rows:
        print(f"{name:<44} {per_cpu:>12,.0f} {per_wall:>12,.0f}")
    if grain is None:
        print(f"Grain + ArrayRecord: {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
