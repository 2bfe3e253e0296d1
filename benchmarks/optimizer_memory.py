"""Optimizer memory: state bytes per parameter, and the peak memory of one training step.

1. For the tiny/small/base configs, the optimizer state (float32) per parameter of Keras'
   ``keras.optimizers.Adafactor`` (``keras_adafactor``), t5pre's T5/t5x Adafactor (``adafactor``)
   and AdamW, counted from the variable shapes (``t5pre.training.optimizer_state``; that this
   count equals the variables the optimizers really build is tests/test_adafactor.py's job).
2. For ``--step-size`` (default tiny), one real training step per optimizer, each in a fresh
   process: the peak resident memory (``ru_maxrss``) after model + optimizer build + one step,
   minus the peak after the model alone, in MiB.

    .venv/bin/python benchmarks/optimizer_memory.py
    .venv/bin/python benchmarks/optimizer_memory.py --step-size small --batch 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]

OPTIMIZERS = ("keras_adafactor", "adafactor", "adamw")


def _config(size):
    from t5pre.models.config import T5Config

    config = T5Config.from_name(size)
    return config if config.vocab_size else config.resolve_vocab_size(4100)  # shipped vocab


def state_table(sizes):
    from t5pre.models.info import all_parameter_shapes
    from t5pre.training.optimizer_state import state_elements

    print(f"{'size':<6} {'parameters':>12}  " + "  ".join(f"{o:>16}" for o in OPTIMIZERS)
          + "   (optimizer-state bytes per parameter, float32)")
    for size in sizes:
        shapes = all_parameter_shapes(_config(size))
        params = sum(math.prod(s) for s in shapes)
        cells = [f"{4 * state_elements(o, shapes) / params:16.4f}" for o in OPTIMIZERS]
        print(f"{size:<6} {params:>12,}  " + "  ".join(cells))


STEP_SCRIPT = """
import json, resource, sys
import numpy as np, keras, tensorflow as tf
from t5pre.models.t5 import T5Model
from t5pre.models.losses import seq2seq_loss
from t5pre.training.adafactor import Adafactor
from train_step import make_batch
from optimizer_memory import _config
name, size, b, n, m = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
config = _config(size)
class A: batch, inputs_length, targets_length, seed = b, n, m, 0
batch = make_batch(config, A)
model = T5Model(config)
model(batch, training=False)
base = rss()
opt = {"adafactor": lambda: Adafactor(1e-3), "adamw": lambda: keras.optimizers.AdamW(1e-4),
       "keras_adafactor": lambda: keras.optimizers.Adafactor(1e-3)}[name]()
opt.build(model.trainable_variables)
@tf.function
def step():
    with tf.GradientTape() as tape:
        loss, _ = seq2seq_loss(batch["decoder_target_ids"], model(batch, training=True),
                               batch["decoder_loss_weights"])
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply([tf.convert_to_tensor(g) for g in grads], model.trainable_variables)
    return loss
step()
print(json.dumps({"model_mib": base, "delta_mib": rss() - base}))
"""


def step_peak(name, args):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([_HERE, os.path.dirname(_HERE),
                                          os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", STEP_SCRIPT, name, args.step_size,
                          str(args.batch), str(args.inputs_length), str(args.targets_length)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="tiny,small,base")
    p.add_argument("--step-size", default="tiny", help="model of the one-step peak (none: skip)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--targets-length", type=int, default=32)
    args = p.parse_args(argv)
    state_table(args.sizes.split(","))
    if args.step_size != "none":
        print(f"\none training step, {args.step_size}, batch {args.batch} x ({args.inputs_length}"
              f" + {args.targets_length}), TF CPU: peak RSS above the built model")
        for name in OPTIMIZERS:
            r = step_peak(name, args)
            print(f"  {name:<16} +{r['delta_mib']:8.1f} MiB   (model alone {r['model_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
