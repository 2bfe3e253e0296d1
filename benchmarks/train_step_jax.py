"""Training-step throughput and model FLOPs utilisation (MFU): the Trainer's step on JAX and TF.

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

Two steps are timed on the same model and batch:

* ``bare``: the minimal jitted step above (JAX only) -- what the hardware can do;
* ``trainer``: the step the Trainer really runs, built by its backend
  (``backend.train_step_fn``: global-token loss weighting, gradient accumulation, clipping by
  global norm, z-loss, the finite check that skips bad updates, the host read of the step's
  metrics) -- ``JaxBackend`` (``keras.distribution``) on ``--backend jax``, ``TFBackend``
  (tf.distribute, ``tf.function``) on ``--backend tensorflow``.

``--compare-backends`` runs the trainer step once per backend, each in its own process, and
prints both and the ratio (TF ms/step / JAX ms/step); without TensorFlow it says so and times
JAX alone.

    python benchmarks/train_step_jax.py --size base --batch 64              # GPU: bare + trainer
    python benchmarks/train_step_jax.py --size tiny --batch 8 --steps 3     # CPU smoke run
    python benchmarks/train_step_jax.py --size tiny --batch 16 --inputs-length 128 \
        --targets-length 32 --precision float32 --compare-backends          # CPU: TF vs JAX

The script sets ``KERAS_BACKEND`` itself (``--backend``, default jax). Prints one line per timed
window and a summary per step: step time (median), tokens/s (inputs + targets), target
tokens/s, TFLOP/s and MFU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

def _backend_from_argv(argv) -> str:
    for i, a in enumerate(argv):
        if a == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--backend="):
            return a.split("=", 1)[1]
    return "jax"


os.environ["KERAS_BACKEND"] = _backend_from_argv(sys.argv[1:])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    p.add_argument("--backend", choices=["jax", "tensorflow"], default="jax",
                   help="Keras backend (set before Keras is imported)")
    p.add_argument("--what", default=None,
                   help="comma-separated steps to time: bare, trainer (default: both on jax, "
                        "trainer on tensorflow)")
    p.add_argument("--grad-accum", type=int, default=1, help="trainer step: micro-batches")
    p.add_argument("--jit-compile", choices=["default", "on", "off", "both"], default="default",
                   help="tensorflow trainer step: training.jit_compile (XLA); 'both' times the "
                        "step with XLA off and on in one process, interleaved window by window")
    p.add_argument("--compare-backends", action="store_true",
                   help="time the trainer step on jax and on tensorflow (one process each) "
                        "and print the ratio")
    return p.parse_args(argv)


def build_trainer_step(args, config, jit_compile=None):
    """The Trainer's own step for this model and batch: ``backend.train_step_fn`` after the
    same setup the Trainer does (numerics, model + optimizer under the backend's scope).
    ``jit_compile``: ``training.jit_compile`` (None: the config's default)."""
    import keras

    from t5pre.models.losses import seq2seq_loss
    from t5pre.models.t5 import T5Model
    from t5pre.training.config import from_dict
    from t5pre.training.optimizers import make_optimizer
    from t5pre.training.trainer import make_backend

    precision = "mixed_bfloat16" if args.precision == "bfloat16" else args.precision
    run = from_dict({
        "data": {"task": "default_span_corruption"},  # named only; nothing is read
        "training": {"batch_size": args.batch, "precision": precision, "seed": args.seed,
                     "grad_accum_steps": args.grad_accum,
                     **({} if jit_compile is None else {"jit_compile": jit_compile})},
        "optimizer": {"name": args.optimizer, "warmup_steps": 100},
        "strategy": {"name": "auto"}})
    backend = make_backend(run.strategy)
    backend.setup_numerics(run.training)
    with backend.scope():
        model = T5Model(config)
        batch = make_batch(config, args)
        model({k: v[:1] for k, v in batch.items() if k in FEATURE_KEYS})
        optimizer = make_optimizer(run.optimizer, precision)
        optimizer.build(model.trainable_variables)
    backend.prepare(model, optimizer)
    step = backend.train_step_fn(model, optimizer, seq2seq_loss, run.training)
    if backend.name == "jax":
        batch = backend.place(batch)
    else:
        from t5pre.lazy import tensorflow

        batch = {k: tensorflow().constant(v) for k, v in batch.items()}
    del keras
    return (lambda: float(step(batch)["loss"])), backend.describe(), model


def time_windows(label, run_once, args, flops_per_step, tokens, target_tokens, peak):
    """Compile + first step, warm-up, then ``--windows`` timed windows; prints the summary."""
    t0 = time.perf_counter()
    first = run_once()
    print(f"[{label}] compile + first step: {time.perf_counter() - t0:.1f}s, loss {first:.3f}",
          flush=True)
    for _ in range(args.warmup):
        run_once()
    times, last = [], first
    for w in range(args.windows):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            last = run_once()
        dt = (time.perf_counter() - t0) / args.steps
        times.append(dt)
        print(f"[{label}] window {w + 1}: {dt * 1e3:.1f} ms/step, loss {last:.3f}", flush=True)
    if not np.isfinite(last):
        print(f"error: [{label}] the loss is not finite", file=sys.stderr)
        return None
    dt = statistics.median(times)
    tflops = flops_per_step / dt / 1e12
    mfu = f"{100 * tflops / peak:.1f}% of {peak:.0f} TFLOP/s" if peak else "n/a (no --peak-tflops)"
    print(f"[{label}] median {dt * 1e3:.1f} ms/step | {tokens / dt:,.0f} tokens/s | "
          f"{target_tokens / dt:,.0f} target tokens/s | {tflops:.1f} TFLOP/s | MFU {mfu}",
          flush=True)
    return dt


def compare_backends(argv) -> int:
    """The trainer step on each backend in its own process; both figures and the ratio."""
    import re
    import subprocess

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--compare-backends":
            continue
        if a in ("--backend", "--what"):
            skip = True
            continue
        if a.startswith(("--backend=", "--what=")):
            continue
        rest.append(a)
    medians = {}
    for backend in ("jax", "tensorflow"):
        if backend == "tensorflow":
            probe = subprocess.run([sys.executable, "-c", "import tensorflow"],
                                   capture_output=True)
            if probe.returncode:
                print("tensorflow is not installed here: the TF side is skipped")
                continue
        cmd = [sys.executable, os.path.abspath(__file__), *rest, "--backend", backend,
               "--what", "trainer"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        if out.returncode:
            sys.stderr.write(out.stderr[-3000:])
            return out.returncode
        found = re.search(r"\[trainer\] median ([0-9.]+) ms/step", out.stdout)
        medians[backend] = float(found.group(1))
    if len(medians) == 2:
        print(f"trainer step: jax {medians['jax']:.1f} ms/step, tensorflow "
              f"{medians['tensorflow']:.1f} ms/step; ratio tensorflow/jax "
              f"{medians['tensorflow'] / medians['jax']:.2f}")
    return 0


def compare_jit(args, config) -> int:
    """The TF trainer step with ``training.jit_compile`` off and on, one process, windows
    interleaved (order flipped every window); wall and process CPU time per step."""
    if args.backend != "tensorflow":
        print("error: --jit-compile both is for --backend tensorflow", file=sys.stderr)
        return 2
    steps = {}
    for jit in (False, True):
        run_once, described, _ = build_trainer_step(args, config, jit)
        t0 = time.perf_counter()
        first = run_once()
        for _ in range(args.warmup):
            run_once()
        label = "XLA" if jit else "graph"
        print(f"[{label}] {described}; trace/compile + first step "
              f"{time.perf_counter() - t0:.1f}s, loss {first:.4f}", flush=True)
        steps[label] = run_once
    times = {k: {"wall": [], "cpu": []} for k in steps}
    for w in range(args.windows):
        for label in (list(steps) if w % 2 == 0 else list(steps)[::-1]):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                last = steps[label]()
            times[label]["wall"].append((time.perf_counter() - wall) / args.steps)
            times[label]["cpu"].append((time.process_time() - cpu) / args.steps)
            print(f"[{label}] window {w + 1}: {times[label]['wall'][-1] * 1e3:.1f} ms/step "
                  f"(cpu {times[label]['cpu'][-1] * 1e3:.1f}), loss {last:.4f}", flush=True)
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in times.items()}
    for label, m in med.items():
        print(f"[{label}] median {m['wall'] * 1e3:.1f} ms/step, cpu {m['cpu'] * 1e3:.1f} ms/step")
    print(f"XLA speed-up: {med['graph']['wall'] / med['XLA']['wall']:.2f}x by wall, "
          f"{med['graph']['cpu'] / med['XLA']['cpu']:.2f}x by CPU time; load average "
          f"{os.getloadavg()[0]:.1f}")
    return 0


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.compare_backends:
        return compare_backends(argv)
    import keras

    from t5pre.models.config import T5Config
    from t5pre.models.info import training_flops

    what = (args.what or ("bare,trainer" if args.backend == "jax" else "trainer")).split(",")
    if "bare" in what and args.backend != "jax":
        print("error: the bare step is JAX only (use --what trainer)", file=sys.stderr)
        return 2
    config = T5Config.from_name(args.size)
    vocab = args.vocab_size or config.vocab_size or 32128
    config = dataclasses.replace(config, vocab_size=vocab, dropout_rate=0.0)
    n, m, b = args.inputs_length, args.targets_length, args.batch
    flops_per_step = training_flops(config, n, m)["training_per_example"] * b
    peak, kind = args.peak_tflops, "cpu"
    if args.backend == "jax":
        import jax

        device = jax.devices()[0]
        kind = getattr(device, "device_kind", device.platform)
        peak = peak or next((v for k, v in PEAK_TFLOPS.items() if k in kind.upper()), None)
    print(f"t5pre {args.size} (vocab {vocab}) on {args.backend} / {kind}, {args.precision}, "
          f"{args.optimizer}, batch {b} x ({n} + {m}) tokens, "
          f"{flops_per_step / 1e12:.3f} TFLOP per step", flush=True)
    figures = {}
    if "trainer" in what and args.jit_compile == "both":
        return compare_jit(args, config)
    if "trainer" in what:
        jit = {"on": True, "off": False}.get(args.jit_compile)
        run_once, described, model = build_trainer_step(args, config, jit)
        params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        print(f"[trainer] {described}; {params / 1e6:.1f}M params, grad_accum {args.grad_accum}",
              flush=True)
        figures["trainer"] = time_windows("trainer", run_once, args, flops_per_step,
                                          b * (n + m), b * m, peak)
        del model
    if "bare" in what:
        import jax

        from t5pre.models.t5 import T5Model

        keras.mixed_precision.set_global_policy(args.precision)
        keras.distribution.set_distribution(None)
        model = T5Model(config)
        batch = make_batch(config, args)  # random full-length batch, EncDecFeatureConverter layout
        model({k: v[:1] for k, v in batch.items() if k in FEATURE_KEYS})  # build the variables
        if args.optimizer == "adamw":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.0)
        else:  # T5/t5x's (factored statistics), as `optimizer.name: adafactor` trains
            from t5pre.training.adafactor import Adafactor

            optimizer = Adafactor(learning_rate=1e-3)
        optimizer.build(model.trainable_variables)
        state = [([v.value for v in model.trainable_variables],
                  [v.value for v in model.non_trainable_variables],
                  [v.value for v in optimizer.variables])]
        batch = jax.device_put(batch)
        step = build_step(model, optimizer)

        def run_bare():
            loss, state[0] = step(state[0], batch)
            return float(jax.block_until_ready(loss))

        figures["bare"] = time_windows("bare", run_bare, args, flops_per_step, b * (n + m),
                                       b * m, peak)
    if any(v is None for v in figures.values()):
        return 1
    if len(figures) == 2:
        print(f"trainer step / bare step: {figures['trainer'] / figures['bare']:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
