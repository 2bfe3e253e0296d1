"""Training-step throughput: t5pre (Keras 3, TensorFlow) against Hugging Face T5 (PyTorch), CPU.

Both sides get the same model dimensions (taken from a t5pre size config), the same random batch
(full-length inputs/targets, no padding), the same optimizer family and the same thread count,
and are timed *interleaved* in one process: window 1 of every contender, then window 2 of every
contender, ... The machine this runs on is shared, so load drifts; interleaving makes each
contender see the same drift, and the median over windows discards the outliers. Report the
ratio, not the absolute numbers, when the machine is busy.

What one step is, on each side:

* t5pre: ``tf.function`` (optionally ``jit_compile=True``) of forward + ``seq2seq_loss``
  (cross-entropy + accuracy metric, z-loss off unless ``--z-loss``) under ``GradientTape``,
  gradients, ``optimizer.apply`` (Keras ``AdamW`` or ``Adafactor``).
* HF: ``T5ForConditionalGeneration(input_ids, attention_mask, decoder_input_ids,
  decoder_attention_mask, labels)`` -> ``loss.backward()`` -> ``optimizer.step()`` ->
  ``zero_grad(set_to_none=True)`` with ``torch.optim.AdamW`` or ``transformers``' ``Adafactor``
  (``relative_step=False, scale_parameter=True, decay_rate=-0.8, clip_threshold=1.0``, like
  t5pre's Adafactor settings).

Threads: ``--threads N`` sets TensorFlow's intra-op and inter-op pools to N and torch's intra-op
and inter-op threads to N (default: every core, or 1 when the load average already exceeds the
core count: oversubscribed OpenMP threads make torch collapse, see ``default_threads``).

oneDNN: TensorFlow on this CPU (AVX2, no AVX-512) uses Eigen kernels unless
``TF_ENABLE_ONEDNN_OPTS=1`` is set before it is imported; ``--onednn on`` does that. It matters
(tiny, 1 thread, HF CPU time / t5pre CPU time: 0.84 with Eigen, 1.07 with oneDNN).

Each row reports wall time and process CPU time; on a busy shared machine the CPU-time ratio is
the steadier one (see ``timed``).

``--patch NAME`` (repeatable) swaps in a candidate speed change of the t5pre model for
profiling, as an extra contender next to the unpatched model; see ``PATCHES`` below.

Usage::

    python benchmarks/train_step.py                                  # tiny, AdamW, XLA off+on
    python benchmarks/train_step.py --size small --inputs-length 128 --targets-length 32 \\
        --batch 8 --optimizer adafactor --jit off
    python benchmarks/train_step.py --patch sparse_ce --patch no_accuracy
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", help="t5pre model size (configs/model/NAME.yaml)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="embedding rows (default: the config's; 4224 when it is null)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--targets-length", type=int, default=32)
    p.add_argument("--optimizer", choices=["adamw", "adafactor", "both"], default="adamw")
    p.add_argument("--jit", choices=["off", "on", "both"], default="both",
                   help="t5pre tf.function jit_compile (XLA)")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "both"],
                   default="float32", help="t5pre Keras dtype policy (HF stays float32)")
    p.add_argument("--z-loss", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=5, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows per contender")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per contender")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both frameworks (default: all cores on an idle machine, 1 "
                        "when the load average already exceeds the core count)")
    p.add_argument("--onednn", choices=["default", "on", "off"], default="default",
                   help="set TF_ENABLE_ONEDNN_OPTS=1/0 before TensorFlow is imported (oneDNN "
                        "matmul/conv kernels instead of Eigen's)")
    p.add_argument("--no-hf", action="store_true", help="time t5pre only")
    p.add_argument("--no-base", action="store_true",
                   help="with --patch: skip the unpatched t5pre contender")
    p.add_argument("--patch", action="append", default=[], metavar="NAME",
                   help=f"add a patched t5pre contender; one of: {', '.join(sorted(PATCHES))}"
                        " (combine several with '+', e.g. sparse_ce+no_accuracy)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# -- threads ------------------------------------------------------------------------------------

def set_threads(n):
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel op
        torch.set_num_interop_threads(n)


def default_threads():
    """All cores, unless other processes already keep them busy: then 1. On an oversubscribed
    machine torch's OpenMP threads spin-wait for each other and collapse (measured: HF 6.0 s/step
    with 2 threads vs 0.9 s/step with 1 thread at load average 7 on 2 cores) while TF's pool
    degrades gracefully, so a multi-threaded ratio would measure the load, not the models."""
    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] >= cores else cores


# -- shared setup -------------------------------------------------------------------------------

def model_config(args):
    import dataclasses

    from t5pre.models import T5Config

    config = T5Config.from_name(args.size)
    vocab = args.vocab_size or config.vocab_size or 4224
    return dataclasses.replace(config, vocab_size=vocab, dropout_rate=0.0)


def make_batch(config, args):
    """One random full-length batch in the EncDecFeatureConverter layout (numpy)."""
    rng = np.random.default_rng(args.seed)
    b, n, m = args.batch, args.inputs_length, args.targets_length
    targets = rng.integers(2, config.vocab_size, size=(b, m), dtype=np.int32)
    decoder_in = np.concatenate([np.zeros((b, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_token_ids": rng.integers(2, config.vocab_size, size=(b, n), dtype=np.int32),
        "encoder_padding_mask": np.ones((b, n), np.int32),
        "decoder_token_ids": decoder_in,
        "decoder_padding_mask": np.ones((b, m), np.int32),
        "decoder_target_ids": targets,
        "decoder_loss_weights": np.ones((b, m), np.float32),
    }


# -- candidate patches (profiling) -------------------------------------------------------------
#
# Each patch is a context manager that temporarily replaces one piece of t5pre while a contender
# is built and traced (tf.function captures the code at trace time, so the patch only needs to
# be active while tracing). They are the measured evidence behind proposed model changes.

def _patched(obj, name, value):
    @contextlib.contextmanager
    def manager():
        old = getattr(obj, name)
        setattr(obj, name, value)
        try:
            yield
        finally:
            setattr(obj, name, old)
    return manager()


def _loss_fn(sparse=False, accuracy=True):
    """seq2seq_loss variants: the loss/metric definitions are unchanged, only how they are
    computed."""
    from keras import ops

    def loss(target_ids, logits, loss_weights, z_loss=0.0):
        import tensorflow as tf

        logits = ops.cast(logits, "float32")
        target_ids = ops.cast(target_ids, "int32")
        weights = ops.cast(loss_weights, "float32")
        num_tokens = ops.sum(weights)
        denominator = ops.maximum(num_tokens, 1e-8)
        if sparse:
            token_nll = tf.nn.sparse_softmax_cross_entropy_with_logits(target_ids, logits)
            log_z = ops.logsumexp(logits, axis=-1) if z_loss else None
        else:
            log_z = ops.logsumexp(logits, axis=-1)
            target_logit = ops.squeeze(ops.take_along_axis(logits, target_ids[..., None], -1), -1)
            token_nll = log_z - target_logit
        cross_entropy = ops.sum(token_nll * weights) / denominator
        z_term = 0.0
        if z_loss:
            z_term = z_loss * ops.sum(ops.square(log_z) * weights) / denominator
        metrics = {"loss": cross_entropy + z_term, "num_tokens": num_tokens}
        if accuracy:
            predictions = ops.cast(ops.argmax(logits, axis=-1), "int32")
            correct = ops.cast(ops.equal(predictions, target_ids), "float32")
            metrics["accuracy"] = ops.sum(correct * weights) / denominator
        return cross_entropy + z_term, metrics

    return loss


PATCHES = {}  # name -> callable returning a context manager; filled by _register_patches()


def _register_patches():

    def sparse_ce():
        return _patched(sys.modules[__name__], "LOSS_OVERRIDE", _loss_fn(sparse=True))

    def no_accuracy():
        return _patched(sys.modules[__name__], "LOSS_OVERRIDE", _loss_fn(accuracy=False))

    def sparse_ce_no_accuracy():
        return _patched(sys.modules[__name__], "LOSS_OVERRIDE",
                        _loss_fn(sparse=True, accuracy=False))

    def xla_apply():  # handled by T5preContender: the optimizer update alone under XLA
        return contextlib.nullcontext()

    PATCHES.update(xla_apply=xla_apply)
    PATCHES.update(sparse_ce=sparse_ce, no_accuracy=no_accuracy,
                   sparse_ce_no_accuracy=sparse_ce_no_accuracy)
    # cross_no_stack (cross-attention K/V split without stack-then-slice, +6-10%) is adopted in
    # t5pre/models/layers.py and no longer a patch.


LOSS_OVERRIDE = None


# -- contenders -----------------------------------------------------------------------------------

class T5preContender:
    """A t5pre model + Keras optimizer + compiled train step."""

    def __init__(self, config, batch, optimizer, jit, precision, z_loss, patches=()):
        import keras
        import tensorflow as tf

        from t5pre.models import T5Model, seq2seq_loss

        self.name = f"t5pre {optimizer} xla={'on' if jit else 'off'}"
        if precision != "float32":
            self.name += f" {precision}"
        if patches:
            self.name += " +" + "+".join(patches)
        self._patches = list(patches)
        keras.mixed_precision.set_global_policy(precision)
        try:
            self.model = T5Model(config)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        if optimizer == "adamw":
            self.optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.0)
        else:
            self.optimizer = keras.optimizers.Adafactor(
                learning_rate=1e-3, beta_2_decay=-0.8, clip_threshold=1.0, relative_step=False)
        variables = self.model.trainable_variables
        self.optimizer.build(variables)
        model, opt = self.model, self.optimizer
        apply = lambda grads: opt.apply(grads, variables)  # noqa: E731
        if "xla_apply" in patches:
            # Only the optimizer update is compiled by XLA (a function call inside the step
            # graph): its ~10 elementwise passes per variable fuse into one loop.
            apply = tf.function(apply, jit_compile=True)

        def step(features):
            loss_fn = LOSS_OVERRIDE or seq2seq_loss
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                loss, metrics = loss_fn(features["decoder_target_ids"], logits,
                                        features["decoder_loss_weights"], z_loss=z_loss)
            grads = tape.gradient(loss, variables)
            apply(grads)
            return loss

        self._step = tf.function(step, jit_compile=bool(jit))
        self._batch = {k: tf.constant(v) for k, v in batch.items()}
        self.num_parameters = sum(int(np.prod(v.shape)) for v in variables)

    def run(self, steps):
        """Run `steps` steps and block until the last is done; return seconds per step."""
        start = time.perf_counter()
        for _ in range(steps):
            loss = self._step(self._batch)
        float(loss)  # wait for the last step
        seconds = (time.perf_counter() - start) / steps
        return seconds

    def trace(self):
        """First call (tracing/compilation) inside the patches, then release them."""
        with contextlib.ExitStack() as stack:
            for patch in self._patches:
                stack.enter_context(PATCHES[patch]())
            loss = float(self._step(self._batch))
        return loss


class HFContender:
    """transformers.T5ForConditionalGeneration with the same dimensions, torch optimizer."""

    def __init__(self, config, batch, optimizer):
        import torch
        import transformers

        hf_config = transformers.T5Config(
            vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv,
            d_ff=config.d_ff, num_layers=config.num_encoder_layers,
            num_decoder_layers=config.num_decoder_layers, num_heads=config.num_heads,
            relative_attention_num_buckets=config.relative_attention_num_buckets,
            relative_attention_max_distance=config.relative_attention_max_distance,
            dropout_rate=0.0, layer_norm_epsilon=config.layer_norm_epsilon,
            feed_forward_proj=config.feed_forward_proj,
            tie_word_embeddings=config.tie_word_embeddings,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
        torch.manual_seed(0)
        self.model = transformers.T5ForConditionalGeneration(hf_config)
        if not config.tie_word_embeddings and self.model.lm_head.weight is self.model.shared.weight:
            # transformers >= 5 always ties the head to the embedding in memory; T5.1.1 (and
            # t5pre) has a separate head, which is one more [vocab, d_model] matrix to update.
            self.model.lm_head.weight = torch.nn.Parameter(self.model.shared.weight.detach().clone())
        self.model.train()
        self.name = f"HF torch {optimizer}"
        params = self.model.parameters()
        if optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        else:
            from transformers.optimization import Adafactor

            self.optimizer = Adafactor(params, lr=1e-3, relative_step=False,
                                       scale_parameter=True, warmup_init=False,
                                       decay_rate=-0.8, clip_threshold=1.0, beta1=None)
        self._inputs = {
            "input_ids": torch.from_numpy(batch["encoder_token_ids"].astype(np.int64)),
            "attention_mask": torch.from_numpy(batch["encoder_padding_mask"].astype(np.int64)),
            "decoder_input_ids": torch.from_numpy(batch["decoder_token_ids"].astype(np.int64)),
            "decoder_attention_mask": torch.from_numpy(
                batch["decoder_padding_mask"].astype(np.int64)),
            "labels": torch.from_numpy(batch["decoder_target_ids"].astype(np.int64)),
        }
        self.num_parameters = sum(p.numel() for p in self.model.parameters())

    def _one(self):
        loss = self.model(**self._inputs).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def trace(self):
        return float(self._one().detach())

    def run(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            self._one()
        return (time.perf_counter() - start) / steps


# -- driver ---------------------------------------------------------------------------------------

def timed(fn, *args):
    """(wall seconds, process CPU seconds) of `fn(*args)`.

    CPU time counts the work this process did on all its threads, whatever other processes
    do meanwhile: on a shared, oversubscribed machine it is the steadier measure of cost (with
    one thread per framework it is nearly the wall time of a quiet machine; with several, it
    also counts spin-waiting threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(contenders, warmup, windows, steps, log=print):
    """Per contender: {"wall": [...], "cpu": [...]} seconds per step of `windows` windows, run
    interleaved (window w of every contender, then window w + 1; order reversed every other
    window)."""
    for c in contenders:
        t0 = time.perf_counter()
        c.trace()
        if warmup:
            c.run(warmup)
        log(f"  ready: {c.name}  ({time.perf_counter() - t0:.1f} s trace+warmup)")
    results = {c.name: {"wall": [], "cpu": []} for c in contenders}
    for w in range(windows):
        order = contenders if w % 2 == 0 else contenders[::-1]  # also cancel order effects
        for c in order:
            wall, cpu = timed(c.run, steps)
            results[c.name]["wall"].append(wall / steps)
            results[c.name]["cpu"].append(cpu / steps)
    return results


def print_table(results, groups, tokens, unit="step"):
    """One row per contender: median wall s/unit, spread, median CPU s/unit, tokens/s for each
    `tokens` entry ({column: tokens per unit}), and the ratio to the group's reference by wall
    and by CPU time. `groups` is [(reference name or None, [contender names])]."""
    columns = "".join(f" {k:>11s}" for k in tokens)
    print(f"\n{'contender':58s} {'s/' + unit:>9s} {'spread':>6s} {'cpu s':>8s}{columns}"
          f" {'x HF':>5s} {'x HF cpu':>8s}")
    for reference, names in groups:
        ref = results.get(reference)
        for name in names:
            r = results[name]
            wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
            spread = (max(r["wall"]) - min(r["wall"])) / wall
            rates = "".join(f" {n / wall:11.0f}" for n in tokens.values())
            ratio = cpu_ratio = ""
            if ref is not None and name != reference:
                ratio = f"{statistics.median(ref['wall']) / wall:.2f}"
                cpu_ratio = f"{statistics.median(ref['cpu']) / cpu:.2f}"
            print(f"{name:58s} {wall:9.4f} {spread:6.0%} {cpu:8.4f}{rates} {ratio:>5s}"
                  f" {cpu_ratio:>8s}")
    print("\nmedians over windows; spread = (max-min)/median of wall time; tokens/s by wall time;"
          "\n'x HF' = HF time / t5pre time, by wall and by process CPU time (>1: t5pre faster);"
          f" load average now {os.getloadavg()[0]:.1f}")


def main(argv=None):
    args = parse_args(argv)
    if args.onednn != "default":
        if "tensorflow" in sys.modules:
            raise SystemExit("--onednn must be set before TensorFlow is imported")
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    _register_patches()
    for combo in args.patch:
        for p in combo.split("+"):
            if p not in PATCHES:
                raise SystemExit(f"unknown --patch {p!r}; known: {', '.join(sorted(PATCHES))}")
    if args.threads is None:
        args.threads = default_threads()
    set_threads(args.threads)
    import keras

    keras.utils.set_random_seed(args.seed)
    config = model_config(args)
    batch = make_batch(config, args)
    optimizers = ["adamw", "adafactor"] if args.optimizer == "both" else [args.optimizer]
    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]

    precisions = (["float32", "mixed_bfloat16"] if args.precision == "both"
                  else [args.precision])
    contenders = []
    for opt in optimizers:
        for jit in jits:
            for precision in precisions:
                if not (args.patch and args.no_base):
                    contenders.append(T5preContender(config, batch, opt, jit, precision,
                                                     args.z_loss))
                for combo in args.patch:
                    contenders.append(T5preContender(config, batch, opt, jit, precision,
                                                     args.z_loss, combo.split("+")))
        if not args.no_hf:
            contenders.append(HFContender(config, batch, opt))

    target_tokens = args.batch * args.targets_length
    total_tokens = args.batch * (args.inputs_length + args.targets_length)
    print(f"model {config.name or args.size}: d_model={config.d_model} d_ff={config.d_ff} "
          f"heads={config.num_heads}x{config.d_kv} layers={config.num_encoder_layers}+"
          f"{config.num_decoder_layers} vocab={config.vocab_size}; "
          f"params t5pre={contenders[0].num_parameters:,}"
          + (f" HF={contenders[-1].num_parameters:,}" if not args.no_hf else ""))
    print(f"batch {args.batch} x (inputs {args.inputs_length}, targets {args.targets_length}); "
          f"threads {args.threads}; {args.windows} windows x {args.steps} steps, "
          f"warmup {args.warmup}; load average {os.getloadavg()[0]:.1f}")
    results = time_interleaved(contenders, args.warmup, args.windows, args.steps)

    groups = []
    for opt in optimizers:
        names = [c.name for c in contenders if opt in c.name.split()]
        groups.append((f"HF torch {opt}", names))
    print_table(results, groups, {"tgt tok/s": target_tokens, "total tok/s": total_tokens})
    return results


if __name__ == "__main__":
    main()
