"""Checkpoint save / restore time on the JAX backend: t5pre's ``arrays`` format against Orbax.

Both write the same state -- the model weights and the optimizer variables of a t5pre model
(default ``small``) -- to local disk, best of ``--repeats``:

* ``arrays``: ``CheckpointKeeper(format="arrays").save`` (one ``.npy`` per variable + a manifest
  with sha256, temp dir + rename, state file) and ``restore_latest`` (sha256 checked);
* Orbax: ``orbax.checkpoint.StandardCheckpointer`` ``save`` of the same pytree; "blocking" is
  the time until ``save`` returns (Orbax then finishes in the background), "total" until
  ``wait_until_finished``; restore into the same shapes/dtypes.

Orbax is optional: without ``orbax-checkpoint`` installed the script says so and times the
arrays format alone. Prints one line per format and the ratios measured in the same run.

    python benchmarks/checkpoint_formats.py --size small --optimizer adafactor
    python benchmarks/checkpoint_formats.py --size small --optimizer adamw
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


def time_arrays(model, optimizer, root, repeats):
    from t5pre.models.checkpoints import CheckpointKeeper

    saves, restores = [], []
    for i in range(repeats):
        d = os.path.join(root, f"arrays-{i}")
        keeper = CheckpointKeeper(d, model=model, optimizer=optimizer, format="arrays",
                                  max_to_keep=1)
        t0 = time.perf_counter()
        keeper.save(1, 0, 1)
        saves.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        step, _ = keeper.restore_latest()
        restores.append(time.perf_counter() - t0)
        assert step == 1
        keeper.close()
        shutil.rmtree(d)
    return min(saves), min(saves), min(restores)


def time_orbax(model, optimizer, root, repeats):
    import jax
    import orbax.checkpoint as ocp

    tree = {"model": [v.value for v in model.weights],
            "optimizer": [v.value for v in optimizer.variables]}
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
    blocking, totals, restores = [], [], []
    for i in range(repeats):
        path = os.path.join(root, f"orbax-{i}")
        ckptr = ocp.StandardCheckpointer()
        t0 = time.perf_counter()
        ckptr.save(path, tree)
        blocking.append(time.perf_counter() - t0)
        ckptr.wait_until_finished()
        totals.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        restored = ckptr.restore(path, target)
        jax.block_until_ready(restored)
        restores.append(time.perf_counter() - t0)
        ckptr.close()
        shutil.rmtree(path)
    return min(blocking), min(totals), min(restores)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small")
    p.add_argument("--optimizer", default="adafactor", choices=["adafactor", "adamw"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = p.parse_args(argv)
    model, optimizer = build(args.size, args.optimizer)
    size = (nbytes(model.weights) + nbytes(optimizer.variables)) / 1e6
    print(f"{args.size} + {args.optimizer}: {size:.0f} MB of state, best of {args.repeats}")
    root = tempfile.mkdtemp(prefix="t5pre-ckpt-bench-", dir=args.dir)
    try:
        a = time_arrays(model, optimizer, root, args.repeats)
        print(f"arrays: save {a[1]:.2f} s, restore {a[2]:.2f} s")
        try:
            import orbax.checkpoint  # noqa: F401
        except ImportError:
            print("orbax-checkpoint is not installed: Orbax skipped "
                  "(pip install orbax-checkpoint to compare)")
            return 0
        o = time_orbax(model, optimizer, root, args.repeats)
        print(f"orbax:  save {o[0]:.2f} s blocking, {o[1]:.2f} s total, restore {o[2]:.2f} s")
        print(f"ratio arrays / orbax: save {a[1] / o[1]:.2f} (vs total), "
              f"{a[1] / o[0]:.2f} (vs blocking), restore {a[2] / o[2]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
