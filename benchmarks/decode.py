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


# -- contenders -------------------------------------------------------------------------------------

class T5preCached:
    def __init__(self, model, ids, mask, method, new_tokens, beam_size):
        import tensorflow as tf

        from t5pre.models.decoding import decode

        self.name = f"t5pre cached {method}"
        self._fn = tf.function(lambda i, m: decode(
            model, i, m, max_length=new_tokens, method=method, beam_size=beam_size, eos_id=-1))
        self._args = (tf.constant(ids), tf.constant(mask))

    def __call__(self):
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
