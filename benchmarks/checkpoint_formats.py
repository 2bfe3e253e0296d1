"""Checkpoint save / restore time on the JAX backend: the Orbax format against the arrays format.

Both go through t5pre's ``CheckpointKeeper`` -- the code training runs -- on the same state: the
model weights and the optimizer variables of a t5pre model, written to local disk, for each
``--sizes`` entry (default ``small`` and ``base``, with ``--optimizer``, default AdamW: weights
plus two moments), best of ``--repeats``:

* ``arrays``: ``save`` (every value gathered to the host, one ``.npy`` per variable + a manifest
  with sha256, temp dir + rename, state file) blocks training for the whole write;
  ``restore_latest`` reads and hashes every file;
* ``orbax``: ``save`` blocks only until the values are off the devices (fingerprints computed on
  the devices, then Orbax's asynchronous save); "total" is until the checkpoint is complete and
  listed in the state file (``wait``); ``restore_latest`` reads into the variables' shardings
  and checks every fingerprint.

The first save + restore cycle of each format is reported apart ("cold": for Orbax it compiles
the fingerprint programs) and left out of the best-of. Prints one line per format and size and
the ratios measured in the same run.

    python benchmarks/checkpoint_formats.py                      # small and base, AdamW
    python benchmarks/checkpoint_formats.py --sizes small --optimizer adafactor
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE)]


def build(size: str, optimizer_name: str):
    import dataclasses

    import numpy as np

    from t5pre.models.config import T5Config
    from t5pre.models.t5 import T5Model
    from t5pre.training.config import OptimizerSection, resolve, RunConfig
    from t5pre.training.optimizers import make_optimizer

    config = T5Config.from_name(size)
    config = dataclasses.replace(config, vocab_size=config.vocab_size or 32128)
    model = T5Model(config)
    ones = np.ones((1, 8), "int32")
    model({"encoder_token_ids": ones, "encoder_padding_mask": ones, "decoder_token_ids": ones,
           "decoder_padding_mask": ones})
    run = RunConfig(optimizer=OptimizerSection(name=optimizer_name))
    run.data.task = "x"
    optimizer = make_optimizer(resolve(run).optimizer, "float32")
    optimizer.build(model.trainable_variables)
    return model, optimizer


def nbytes(variables) -> int:
    return sum(int(v.value.size) * v.value.dtype.itemsize for v in variables)


def time_format(fmt, model, optimizer, root, repeats):
    """(cold save blocking, cold restore, best blocking, best total, best restore) in seconds.

    The first save and restore of a process ("cold") also compile the fingerprint programs
    (orbax; the restored arrays are committed to their devices, so they compile once more):
    they are reported apart, and the best-of runs over ``repeats`` further save + restore
    cycles, for both formats alike."""
    from t5pre.models.checkpoints import CheckpointKeeper

    blocking, totals, restores, cold = [], [], [], None
    d = os.path.join(root, fmt)
    keeper = CheckpointKeeper(d, model=model, optimizer=optimizer, format=fmt, max_to_keep=1)
    for step in range(1, repeats + 2):
        t0 = time.perf_counter()
        keeper.save(step, 0, 1)
        t1 = time.perf_counter()
        keeper.wait()
        t2 = time.perf_counter()
        gc.collect()
        t3 = time.perf_counter()
        restored, _ = keeper.restore_latest()
        t4 = time.perf_counter()
        assert restored == step, (restored, step)
        if cold is None:
            cold = (t1 - t0, t4 - t3)
            continue
        blocking.append(t1 - t0)
        totals.append(t2 - t0)
        restores.append(t4 - t3)
    keeper.close()
    shutil.rmtree(d, ignore_errors=True)
    return cold[0], cold[1], min(blocking), min(totals), min(restores)


def fingerprint_time(model, optimizer, repeats) -> float:
    """Best time of the fingerprints alone (part of an Orbax save's blocking time)."""
    from t5pre.models.checkpoint_orbax import fingerprints_jax
    from t5pre.models.checkpoint_variables import keyed_variables

    values = [v.value for v in keyed_variables(model, optimizer).values()]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fingerprints_jax(values)
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="small,base", help="comma-separated model sizes")
    p.add_argument("--optimizer", default="adamw", choices=["adafactor", "adamw"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = p.parse_args(argv)
    try:
        import orbax.checkpoint as ocp
    except ImportError:
        print("orbax-checkpoint is not installed: pip install 't5pre[jax]'")
        return 1
    import jax

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, JAX "
          f"{jax.__version__} on {jax.devices()[0].platform}, orbax-checkpoint "
          f"{ocp.__version__}; best of {args.repeats}")
    root = tempfile.mkdtemp(prefix="t5pre-ckpt-bench-", dir=args.dir)
    try:
        for size in args.sizes.split(","):
            model, optimizer = build(size, args.optimizer)
            state = (nbytes(model.weights) + nbytes(optimizer.variables)) / 1e6
            print(f"{size} + {args.optimizer}: {state:.0f} MB of state")
            a = time_format("arrays", model, optimizer, root, args.repeats)
            print(f"  arrays: save {a[2]:.2f} s (blocking = total), restore {a[4]:.2f} s "
                  f"(cold: {a[0]:.2f} s, {a[1]:.2f} s)")
            o = time_format("orbax", model, optimizer, root, args.repeats)
            print(f"  orbax:  save {o[2]:.2f} s blocking, {o[3]:.2f} s total, restore "
                  f"{o[4]:.2f} s (cold, fingerprint programs compiled: {o[0]:.2f} s "
                  f"blocking, restore {o[1]:.2f} s)")
            fp = fingerprint_time(model, optimizer, args.repeats)
            print(f"  orbax blocking save: of which fingerprints {fp:.2f} s")
            print(f"  ratio arrays / orbax: blocking save {a[2] / o[2]:.1f}x, total save "
                  f"{a[3] / o[3]:.2f}x, restore {a[4] / o[4]:.2f}x")
            del model, optimizer
            gc.collect()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
