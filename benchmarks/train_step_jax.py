"""Training-step throughput and model FLOPs utilisation (MFU) on the Keras JAX backend.

This is how t5pre is measured on a GPU machine that has JAX but no TensorFlow: the same model
code (`t5pre.models`, written with `keras.ops`), one jitted step of forward + `seq2seq_loss` +
gradients + optimizer update through Keras' stateless API (`stateless_call`,
`optimizer.stateless_apply`), with the parameters and optimizer state donated so the update is
in place. The batch is random and full length (no padding), T5's pretraining shape by default
(inputs 512, targets 114).

MFU = achieved model FLOPs / peak FLOPs, where the model FLOPs per example come from
`t5pre.models.info.training_flops` (matmuls, 3x forward; no recomputation counted) -- the same
figure `t5pre model info` prints. The peak defaults to 989 TFLOP/s (H100 SXM, dense bf16) when
the device is an H100 or H200; elsewhere pass `--peak-tflops`, or no MFU is printed.

    KERAS_BACKEND=jax python benchmarks/train_step_jax.py --size base --batch 64
    python benchmarks/train_step_jax.py --size tiny --batch 8 --steps 3   # CPU smoke run

The script sets ``KERAS_BACKEND=jax`` itself. Prints one line per timed window and a summary:
step time (median), tokens/s (inputs + targets), target tokens/s, TFLOP/s and MFU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]  # train_step (shared batch maker), t5pre

import numpy as np  # noqa: E402
from train_step import make_batch  # noqa: E402  (numpy only; imports no TensorFlow)

# Dense bf16 peak of the NVIDIA Hopper parts this project is lent (no sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}
FEATURE_KEYS = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
                "decoder_padding_mask")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base", help="t5pre model size (configs/model/NAME.yaml)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="default: the size config's, else 32128 (T5's)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--inputs-length", type=int, default=512)
    p.add_argument("--targets-length", type=int, default=114)
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "bfloat16"],
                   default="mixed_bfloat16",
                   help="Keras dtype policy (mixed: float32 weights, bf16 compute)")
    p.add_argument("--optimizer", choices=["adamw", "adafactor"], default="adafactor")
    p.add_argument("--steps", type=int, default=10, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak for MFU (default: 989 on H100/H200)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_step(model, optimizer):
    """A jitted `state, batch -> loss, state` with state = (trainable, non-trainable, optimizer)."""
    import jax

    from t5pre.models.losses import seq2seq_loss

    def loss_fn(trainable, non_trainable, batch):
        inputs = {k: batch[k] for k in FEATURE_KEYS}
        logits, non_trainable = model.stateless_call(trainable, non_trainable, inputs,
                                                     training=True)
        loss, _ = seq2seq_loss(batch["decoder_target_ids"], logits,
                               batch["decoder_loss_weights"])
        return loss, non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, batch):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, batch)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    return jax.jit(step, donate_argnums=0)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import keras

    from t5pre.models.config import T5Config
    from t5pre.models.info import training_flops
    from t5pre.models.t5 import T5Model

    keras.mixed_precision.set_global_policy(args.precision)
    config = T5Config.from_name(args.size)
    vocab = args.vocab_size or config.vocab_size or 32128
    config = dataclasses.replace(config, vocab_size=vocab, dropout_rate=0.0)
    n, m, b = args.inputs_length, args.targets_length, args.batch

    model = T5Model(config)
    batch = make_batch(config, args)  # random full-length batch, EncDecFeatureConverter layout
    model({k: v[:1] for k, v in batch.items() if k in FEATURE_KEYS})  # build the variables
    if args.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.0)
    else:  # T5/t5x's (factored statistics), as `optimizer.name: adafactor` trains
        from t5pre.training.adafactor import Adafactor

        optimizer = Adafactor(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)

    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    batch = jax.device_put(batch)
    step = build_step(model, optimizer)

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    peak = args.peak_tflops or next(
        (v for k, v in PEAK_TFLOPS.items() if k in kind.upper()), None)
    flops_per_step = training_flops(config, n, m)["training_per_example"] * b
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"t5pre {args.size} ({params / 1e6:.1f}M params, vocab {vocab}) on {kind}, "
          f"{args.precision}, {args.optimizer}, batch {b} x ({n} + {m}) tokens, "
          f"{flops_per_step / 1e12:.2f} TFLOP per step", flush=True)

    t0 = time.perf_counter()
    loss, state = step(state, batch)
    first_loss = float(jax.block_until_ready(loss))
    print(f"compile + first step: {time.perf_counter() - t0:.1f}s, loss {first_loss:.3f}",
          flush=True)
    for _ in range(args.warmup):
        loss, state = step(state, batch)
    jax.block_until_ready(loss)

    times = []
    for w in range(args.windows):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss, state = step(state, batch)
        last = float(jax.block_until_ready(loss))
        dt = (time.perf_counter() - t0) / args.steps
        times.append(dt)
        print(f"window {w + 1}: {dt * 1e3:.1f} ms/step, loss {last:.3f}", flush=True)
    if not np.isfinite(last):
        print("error: the loss is not finite", file=sys.stderr)
        return 1

    dt = statistics.median(times)
    tflops = flops_per_step / dt / 1e12
    mfu = f"{100 * tflops / peak:.1f}% of {peak:.0f} TFLOP/s" if peak else "n/a (no --peak-tflops)"
    print(f"median {dt * 1e3:.1f} ms/step | {b * (n + m) / dt:,.0f} tokens/s | "
          f"{b * m / dt:,.0f} target tokens/s | {tflops:.1f} TFLOP/s | MFU {mfu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
