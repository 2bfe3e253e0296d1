"""Decoding throughput: t5pre (cached and uncached, Keras/TF) against Hugging Face `generate`.

One random T5 (dimensions from a t5pre size config) is created in Hugging Face transformers,
saved to a temporary directory and converted with `t5pre.models.from_hf`, so both sides decode
with *the same weights* and, for greedy, should emit the same tokens (the match rate is printed;
float round-off can flip a near-tie and make a row diverge after that point).

Every contender generates exactly `--new-tokens` tokens per example: EOS is disabled on both
sides (t5pre `eos_id=-1`; HF `eos_token_id=None`), so the token counts, and the work, match.
tokens/s = batch * new tokens / seconds (output tokens, not beams x tokens).

Contenders:

* ``t5pre cached``: `t5pre.models.decoding.decode` (encoder once, cross keys/values once,
  preallocated self-attention cache, `while_loop`) inside one `tf.function`.
* ``t5pre uncached``: the same loop without a cache, written here: encoder once, then at every
  step the full teacher-forced decoder over a fixed-length token buffer (`T5Model.decode`),
  reading the logits at the current position. Static shapes, one trace. Greedy only.
* ``t5pre uncached eager`` (``--eager-uncached``): `decoding.uncached_greedy`, the model's own
  eager reference (whole model per step, prefix growing); slow, for reference.
* ``HF generate``: `T5ForConditionalGeneration.generate(num_beams=1|K, do_sample=False,
  use_cache=True, max_new_tokens=min_new_tokens=N)` in PyTorch, under `torch.inference_mode`.

Beam search: t5pre runs T5/t5x-style beam search (2K candidates, length penalty alpha=0.6);
HF's `generate(num_beams=K)` has the same structure (2K candidates); the tokens need not match.

``--patch head_major`` / ``--patch kv_flat`` add a cached contender with a candidate change of
the decoding path (local copies of model methods, swapped in while it traces), the measured
evidence for proposed model changes: ``head_major`` keeps decode-time keys/values as
[B, H, T, dk] (no per-step transpose); ``kv_flat`` also puts layer and key|value on axis 0.

Threads and timing as in `train_step.py`: same thread count for TF and torch, contenders
interleaved window by window, median of windows.

Usage::

    python benchmarks/decode.py                       # tiny, batch 8, 128 inputs, 32 new tokens
    python benchmarks/decode.py --size small --batch 4 --new-tokens 16 --methods greedy
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import default_threads, print_table, set_threads, timed  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="embedding rows (default: the config's; 4224 when it is null)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--methods", default="greedy,beam", help="comma list of greedy, beam")
    p.add_argument("--no-uncached", action="store_true", help="skip the t5pre uncached loop")
    p.add_argument("--eager-uncached", action="store_true",
                   help="also time decoding.uncached_greedy (eager; slow)")
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="decodes per timed window")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--onednn", choices=["default", "on", "off"], default="default",
                   help="set TF_ENABLE_ONEDNN_OPTS=1/0 before TensorFlow is imported")
    p.add_argument("--patch", action="append", default=[], metavar="NAME",
                   help="add a t5pre cached contender with a candidate speed change of the "
                        "decoding path (profiling); one of: " + ", ".join(sorted(PATCHES))
                        + "; combine with '+'")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# -- the shared random model -----------------------------------------------------------------------

def build_models(args):
    """A random HF T5 and the same weights as a t5pre T5Model (via save + from_hf)."""
    import dataclasses

    import torch
    import transformers

    from t5pre.models import T5Config, from_hf

    config = T5Config.from_name(args.size)
    config = dataclasses.replace(config, vocab_size=args.vocab_size or config.vocab_size or 4224,
                                 dropout_rate=0.0)
    hf_config = transformers.T5Config(
        vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
        num_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        dropout_rate=0.0, layer_norm_epsilon=config.layer_norm_epsilon,
        feed_forward_proj=config.feed_forward_proj,
        tie_word_embeddings=config.tie_word_embeddings,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(args.seed)
    hf = transformers.T5ForConditionalGeneration(hf_config)
    if not config.tie_word_embeddings and hf.lm_head.weight is hf.shared.weight:
        # transformers >= 5 ties the head in memory; give it its own (equal-valued) matrix so
        # that both sides hold the same parameters.
        hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
    hf.eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        model, _ = from_hf(tmp)
    return config, hf, model


def random_inputs(config, args):
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(2, config.vocab_size, size=(args.batch, args.inputs_length), dtype=np.int32)
    return ids, np.ones_like(ids)


# -- candidate patches of the decoding path (profiling) ------------------------------------------------
#
# Measured evidence for proposed changes to t5pre/models/layers.py and t5.py. A patch is active
# only while its contender traces (tf.function captures the code then).

def _head_major_cross_key_values(self, encoder_outputs):
    """[B, 2, H, N, dk]: the per-head layout the attention matmuls read, transposed once per
    decode instead of at every step."""
    from keras import ops

    from t5pre.models.layers import _compute

    kv = ops.matmul(_compute(self, encoder_outputs), _compute(self, self.key_value_kernel))
    shape = ops.shape(kv)
    kv = ops.reshape(kv, (shape[0], shape[1], 2, self.num_heads, self.key_value_dim))
    return ops.transpose(kv, (0, 2, 3, 1, 4))


def _head_major_init_cache(self, batch_size, max_length):
    """Self-attention cache [layers, B, 2, H, T, dk] (head-major)."""
    from keras import ops

    c = self.config
    return ops.zeros((c.num_decoder_layers, batch_size, 2, c.num_heads, max_length, c.d_kv),
                     dtype=self.compute_dtype)


def _head_major_attention_call(self, hidden_states, attention_bias, encoder_outputs=None,
                               cross_key_values=None, cache=None, cache_index=None,
                               training=None):
    """T5Attention.call whose decode-time keys/values (cross K/V, self-attention cache) are
    head-major [B, H, T, dk], so that no per-step transpose of them is needed."""
    from keras import ops

    from t5pre.models.layers import _compute

    if cache is None and cross_key_values is None:  # training / full pass: unchanged
        return _ORIGINAL["attention_call"](self, hidden_states, attention_bias,
                                           encoder_outputs=encoder_outputs, training=training)
    x = _compute(self, hidden_states)
    if self.cross_attention:
        query = ops.matmul(x, _compute(self, self.query_kernel))
        shape = ops.shape(query)
        query = ops.reshape(query, (shape[0], shape[1], self.num_heads, self.key_value_dim))
        key, value = cross_key_values[:, 0], cross_key_values[:, 1]
    else:
        qkv = ops.matmul(x, _compute(self, self.qkv_kernel))
        query, key, value = self._split_heads(qkv, 3)  # [B, 1, H, dk]
        steps = ops.shape(cache)[3]
        at_index = ops.reshape(ops.arange(steps) == cache_index, (1, 1, 1, steps, 1))
        step_kv = ops.transpose(ops.stack([key, value], axis=1), (0, 1, 3, 2, 4))  # [B,2,H,1,dk]
        cache = ops.where(at_index, step_kv, cache)
        key, value = cache[:, 0], cache[:, 1]
    scores = ops.einsum("bqhd,bhkd->bhqk", query, key)
    scores = ops.cast(scores, "float32") + attention_bias
    weights = ops.softmax(scores, axis=-1) if scores.shape[-1] != 1 else ops.ones_like(scores)
    weights = _compute(self, weights)
    context = ops.einsum("bhqk,bhkd->bqhd", weights, value)
    shape = ops.shape(context)
    context = ops.reshape(context, (shape[0], shape[1], self.inner_dim))
    output = ops.matmul(context, _compute(self, self.output_kernel))
    if cache is not None:
        return output, cache
    return output


def _head_major_decode_step(self, token_ids, cache_index, cache, cross_key_values,
                            encoder_padding_mask):
    """T5Model.decode_step for the head-major cache (the step count is axis 4, not 3)."""
    from keras import ops

    from t5pre.models.t5 import _as_int, _mask_to_bias

    token_ids = _as_int(token_ids)
    cache_index = ops.cast(cache_index, "int32")
    steps = ops.shape(cache)[4]
    key_positions = ops.arange(steps, dtype="int32")
    bias = self.decoder_position_bias(ops.reshape(cache_index, (1, 1)), key_positions[None, :])
    bias = bias + _mask_to_bias(key_positions <= cache_index)[None, None, None, :]
    cross_bias = _mask_to_bias(ops.cast(_as_int(encoder_padding_mask), "bool"))[:, None, None, :]
    x = self.token_embedding(token_ids[:, None])
    new_cache = []
    for i, block in enumerate(self.decoder_blocks):
        x, layer_cache = block(x, bias, cross_bias, cross_key_values=cross_key_values[i],
                               cache=cache[i], cache_index=cache_index)
        new_cache.append(layer_cache)
    x = self.decoder_final_norm(x)
    return self.logits(x)[:, 0], ops.stack(new_cache)


# "kv_flat": head-major AND layer and key|value sharing axis 0 -- cross K/V
# [2 * layers, B, H, N, dk], cache [2 * layers, B, H, T, dk], rows 2i / 2i+1 = keys / values of
# layer i -- so that every per-layer / per-k|v read is a dim-0 slice, which TensorFlow serves
# without a copy (inner-axis slices such as `x[:, 0]` copy: 48% of a beam decode). The batch
# stays on axis 1, so decoding.py (beam repeat / cache gather on axis 1) works unchanged.

def _pair_attention_call(self, hidden_states, attention_bias, encoder_outputs=None,
                            cross_key_values=None, cache=None, cache_index=None, training=None):
    from keras import ops

    from t5pre.models.layers import _compute

    if cache is None and cross_key_values is None:
        return _ORIGINAL["attention_call"](self, hidden_states, attention_bias,
                                           encoder_outputs=encoder_outputs, training=training)
    x = _compute(self, hidden_states)
    if self.cross_attention:
        query = ops.matmul(x, _compute(self, self.query_kernel))
        shape = ops.shape(query)
        query = ops.reshape(query, (shape[0], shape[1], self.num_heads, self.key_value_dim))
        key, value = cross_key_values[0], cross_key_values[1]
    else:
        qkv = ops.matmul(x, _compute(self, self.qkv_kernel))
        query, key, value = self._split_heads(qkv, 3)  # [B, 1, H, dk]
        steps = ops.shape(cache)[3]
        at_index = ops.reshape(ops.arange(steps) == cache_index, (1, 1, 1, steps, 1))
        step_kv = ops.transpose(ops.stack([key, value]), (0, 1, 3, 2, 4))  # [2, B, H, 1, dk]
        cache = ops.where(at_index, step_kv, cache)
        key, value = cache[0], cache[1]
    scores = ops.einsum("bqhd,bhkd->bhqk", query, key)
    scores = ops.cast(scores, "float32") + attention_bias
    weights = ops.softmax(scores, axis=-1) if scores.shape[-1] != 1 else ops.ones_like(scores)
    weights = _compute(self, weights)
    context = ops.einsum("bhqk,bhkd->bqhd", weights, value)
    shape = ops.shape(context)
    context = ops.reshape(context, (shape[0], shape[1], self.inner_dim))
    output = ops.matmul(context, _compute(self, self.output_kernel))
    if cache is not None:
        return output, cache
    return output


def _flat_cross_key_values(self, encoder_outputs):
    from keras import ops

    return ops.concatenate([ops.transpose(_head_major_cross_key_values(block.cross_attention,
                                                                       encoder_outputs),
                                          (1, 0, 2, 3, 4))
                            for block in self.decoder_blocks], axis=0)


def _flat_init_cache(self, batch_size, max_length):
    from keras import ops

    c = self.config
    return ops.zeros((2 * c.num_decoder_layers, batch_size, c.num_heads, max_length, c.d_kv),
                     dtype=self.compute_dtype)


def _flat_decode_step(self, token_ids, cache_index, cache, cross_key_values,
                      encoder_padding_mask):
    from keras import ops

    from t5pre.models.t5 import _as_int, _mask_to_bias

    token_ids = _as_int(token_ids)
    cache_index = ops.cast(cache_index, "int32")
    steps = ops.shape(cache)[3]
    key_positions = ops.arange(steps, dtype="int32")
    bias = self.decoder_position_bias(ops.reshape(cache_index, (1, 1)), key_positions[None, :])
    bias = bias + _mask_to_bias(key_positions <= cache_index)[None, None, None, :]
    cross_bias = _mask_to_bias(ops.cast(_as_int(encoder_padding_mask), "bool"))[:, None, None, :]
    x = self.token_embedding(token_ids[:, None])
    new_cache = []
    for i, block in enumerate(self.decoder_blocks):
        x, layer_cache = block(x, bias, cross_bias,
                               cross_key_values=cross_key_values[2 * i: 2 * i + 2],
                               cache=cache[2 * i: 2 * i + 2], cache_index=cache_index)
        new_cache.append(layer_cache)
    x = self.decoder_final_norm(x)
    return self.logits(x)[:, 0], ops.concatenate(new_cache, axis=0)


def _patch_kv_flat():
    import contextlib

    from t5pre.models import layers, t5

    _ORIGINAL.setdefault("attention_call", layers.T5Attention.call)
    stack = contextlib.ExitStack()
    for obj, name, value in [
        (layers.T5Attention, "call", _pair_attention_call),  # reads [2, B, H, T, dk]
        (t5.T5Model, "cross_key_values", _flat_cross_key_values),
        (t5.T5Model, "init_cache", _flat_init_cache),
        (t5.T5Model, "decode_step", _flat_decode_step),
    ]:
        old = getattr(obj, name)
        setattr(obj, name, value)
        stack.callback(setattr, obj, name, old)
    return stack


_ORIGINAL = {}


def _patch_head_major():
    import contextlib

    from t5pre.models import layers, t5

    _ORIGINAL.setdefault("attention_call", layers.T5Attention.call)
    stack = contextlib.ExitStack()
    for obj, name, value in [
        (layers.T5Attention, "call", _head_major_attention_call),
        (layers.T5Attention, "cross_key_values", _head_major_cross_key_values),
        (t5.T5Model, "init_cache", _head_major_init_cache),
        (t5.T5Model, "decode_step", _head_major_decode_step),
    ]:
        old = getattr(obj, name)
        setattr(obj, name, value)
        stack.callback(setattr, obj, name, old)
    return stack


PATCHES = {"head_major": _patch_head_major, "kv_flat": _patch_kv_flat}


# -- contenders -------------------------------------------------------------------------------------

class T5preCached:
    def __init__(self, model, ids, mask, method, new_tokens, beam_size, patches=()):
        import tensorflow as tf

        from t5pre.models.decoding import decode

        self.name = f"t5pre cached {method}" + (" +" + "+".join(patches) if patches else "")
        self._patches = list(patches)
        self._fn = tf.function(lambda i, m: decode(
            model, i, m, max_length=new_tokens, method=method, beam_size=beam_size, eos_id=-1))
        self._args = (tf.constant(ids), tf.constant(mask))
        self._traced = False

    def __call__(self):
        import contextlib

        with contextlib.ExitStack() as stack:
            if not self._traced:
                for patch in self._patches:
                    stack.enter_context(PATCHES[patch]())
                self._traced = True
            tokens, _ = self._fn(*self._args)
        return np.asarray(tokens)


class T5preUncached:
    """Greedy without a cache: one full decoder pass over a fixed-length buffer per new token."""

    def __init__(self, model, ids, mask, new_tokens):
        import tensorflow as tf
        from keras import ops

        self.name = "t5pre uncached greedy"
        length = new_tokens

        def run(ids, mask):
            batch = ops.shape(ids)[0]
            encoder_outputs = model.encode(ids, mask)
            tokens = ops.zeros((batch, length), "int32")
            positions = ops.arange(length)

            def body(i, tokens):
                decoder_in = ops.concatenate([ops.zeros((batch, 1), "int32"), tokens[:, :-1]], 1)
                logits = model.decode(decoder_in, encoder_outputs, encoder_padding_mask=mask)
                at_i = ops.cast(positions == i, "float32")[None, :, None]
                next_ids = ops.cast(ops.argmax(ops.sum(logits * at_i, axis=1), axis=-1), "int32")
                tokens = ops.where((positions == i)[None, :], next_ids[:, None], tokens)
                return i + 1, tokens

            _, tokens = ops.while_loop(lambda i, t: i < length, body,
                                       (ops.convert_to_tensor(0, "int32"), tokens))
            return tokens

        self._fn = tf.function(run)
        self._args = (tf.constant(ids), tf.constant(mask))

    def __call__(self):
        return np.asarray(self._fn(*self._args))


class T5preEagerUncached:
    def __init__(self, model, ids, mask, new_tokens):
        from t5pre.models.decoding import uncached_greedy

        self.name = "t5pre uncached eager greedy"
        self._run = lambda: uncached_greedy(model, ids, mask, new_tokens, eos_id=-1)

    def __call__(self):
        return self._run()


class HFGenerate:
    def __init__(self, hf, ids, mask, method, new_tokens, beam_size):
        import torch

        self.name = f"HF generate {method}"
        self._torch = torch
        self._hf = hf
        self._inputs = dict(input_ids=torch.from_numpy(ids.astype(np.int64)),
                            attention_mask=torch.from_numpy(mask.astype(np.int64)))
        self._settings = dict(
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            num_beams=beam_size if method == "beam" else 1, use_cache=True,
            eos_token_id=None, length_penalty=0.6 if method == "beam" else 1.0,
            decoder_start_token_id=0, pad_token_id=0,
        )

    def __call__(self):
        with self._torch.inference_mode():
            out = self._hf.generate(**self._inputs, **self._settings)
        return out[:, 1:].numpy()  # drop the start token


def main(argv=None):
    args = parse_args(argv)
    if args.onednn != "default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    if args.threads is None:
        args.threads = default_threads()
    set_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    config, hf, model = build_models(args)
    ids, mask = random_inputs(config, args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    contenders = []
    for method in methods:
        if method not in ("greedy", "beam"):
            raise SystemExit(f"unknown method {method!r}")
        contenders.append(T5preCached(model, ids, mask, method, args.new_tokens, args.beam_size))
        for combo in args.patch:
            contenders.append(T5preCached(model, ids, mask, method, args.new_tokens,
                                          args.beam_size, combo.split("+")))
        if method == "greedy" and not args.no_uncached:
            contenders.append(T5preUncached(model, ids, mask, args.new_tokens))
        if method == "greedy" and args.eager_uncached:
            contenders.append(T5preEagerUncached(model, ids, mask, args.new_tokens))
        if not args.no_hf:
            contenders.append(HFGenerate(hf, ids, mask, method, args.new_tokens, args.beam_size))

    print(f"model {config.name or args.size}: d_model={config.d_model} d_ff={config.d_ff} "
          f"heads={config.num_heads}x{config.d_kv} layers={config.num_encoder_layers}+"
          f"{config.num_decoder_layers} vocab={config.vocab_size}; same random weights both sides")
    print(f"batch {args.batch}, inputs {args.inputs_length}, {args.new_tokens} new tokens, beam "
          f"{args.beam_size}; threads {args.threads}; {args.windows} windows x {args.repeats} "
          f"decodes; load average {os.getloadavg()[0]:.1f}")

    outputs = {}
    for c in contenders:  # first call: tracing / warm-up, and the tokens for the parity check
        t0 = time.perf_counter()
        outputs[c.name] = c()
        print(f"  ready: {c.name} ({time.perf_counter() - t0:.1f} s first call)")
    times = {c.name: {"wall": [], "cpu": []} for c in contenders}
    for w in range(args.windows):
        for c in (contenders if w % 2 == 0 else contenders[::-1]):
            wall, cpu = timed(lambda: [c() for _ in range(args.repeats)])
            times[c.name]["wall"].append(wall / args.repeats)
            times[c.name]["cpu"].append(cpu / args.repeats)

    groups = [(f"HF generate {m}" if not args.no_hf else None,
               [c.name for c in contenders if m in c.name.split()]) for m in methods]
    print_table(times, groups, {"tokens/s": args.batch * args.new_tokens}, unit="decode")
    if not args.no_hf:
        print("\nsame tokens as HF (same weights; EOS disabled both sides):")
        for method in methods:
            theirs = outputs[f"HF generate {method}"]
            for name in groups[methods.index(method)][1]:
                if name.startswith("HF"):
                    continue
                same = outputs[name] == theirs
                print(f"  {name:44s} {same.mean():7.1%} of tokens, {same.all(axis=1).mean():4.0%}"
                      " of rows")
    return times, outputs


if __name__ == "__main__":
    main()
