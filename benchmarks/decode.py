"""Decoding speed: t5pre's compiled decoder against Hugging Face `generate`, same weights.

One random T5 (dimensions from a t5pre size config) is created in Hugging Face transformers,
saved to a temporary directory and converted with `t5pre.models.from_hf`, so both sides decode
with *the same weights* and should emit the same tokens (the match rate is printed; float
round-off can flip a near-tie and make a row diverge after that point).

Every contender generates exactly `--new-tokens` tokens per example: EOS is disabled on both
sides (t5pre `eos_id=-1`; HF `eos_token_id=None`), so the token counts, and the work, match.
tokens/s = batch * new tokens / seconds (output tokens, not beams x tokens).

Contenders, per method (greedy, beam) and batch size:

* ``t5pre``: what `t5pre predict` / `evaluate` run, `t5pre.models.decoding.compile_decoder`
  with the default `DecodeSettings` (the whole decode one XLA program: `tf.function(jit_compile=
  True)` on TensorFlow, `jax.jit` on JAX), numpy in, numpy out.
* ``t5pre graph`` (TensorFlow, `--graph`, on by default): the same with `xla=False`, the loop as
  a plain `tf.function` graph (t5pre's decoding before 2026-12-04).
* ``t5pre uncached`` (TensorFlow, `--uncached`): greedy without a cache, written here: encoder
  once, then at every step the full teacher-forced decoder over a fixed-length token buffer.
* ``HF generate``: `T5ForConditionalGeneration.generate(num_beams=1|K, do_sample=False,
  use_cache=True, max_new_tokens=min_new_tokens=N)` in PyTorch, under `torch.inference_mode`.

Where the time goes (`--breakdown`, on by default): the encoder alone (t5pre: encoder and the
cross-attention keys/values, compiled like the decoder; HF: `model.encoder`) and a decode of one
new token, timed in the same windows; per step = (full decode - one-token decode) / (N - 1).
`cores` = process CPU time / wall time: how many cores a contender kept busy.

Beam search: t5pre runs T5/t5x-style beam search (2K candidates, length penalty alpha=0.6);
HF's `generate(num_beams=K)` has the same structure (2K candidates).

Threads: `--threads 1,2` runs one child process per thread count (TensorFlow's thread pools are
fixed once it starts); in each, TF intra- and inter-op pools (which XLA's compiled code uses
too) and torch's threads are set to N; on JAX with N = 1 the process is pinned to one core
(and XLA's Eigen pool made single-threaded: JAX's runtime has threads of its own).
`--backend tensorflow,jax` likewise runs a child per Keras backend. Contenders are interleaved window by window (order flipped every window) and
each figure is the median of the windows; a summary table of all children ends the run.

Usage::

    python benchmarks/decode.py --onednn on --windows 5     # tiny, batch 8, 128 inputs, 32 new
    python benchmarks/decode.py --onednn on --threads 1,2 --batch 1,8,32 --backend tensorflow,jax
    python benchmarks/decode.py --size small --batch 4 --new-tokens 16 --methods greedy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import default_threads, set_threads, timed  # noqa: E402


def _ints(text):
    return [int(x) for x in str(text).split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="embedding rows (default: the config's; 4224 when it is null)")
    p.add_argument("--batch", type=_ints, default=[8], help="comma list of batch sizes")
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--methods", default="greedy,beam", help="comma list of greedy, beam")
    p.add_argument("--backend", default=None,
                   help="comma list of Keras backends, tensorflow and/or jax (default: "
                        "KERAS_BACKEND, else tensorflow)")
    p.add_argument("--no-graph", dest="graph", action="store_false",
                   help="skip the t5pre graph (xla=False) contender")
    p.add_argument("--uncached", action="store_true", help="also time the uncached greedy loop")
    p.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                   help="skip the encoder-only and one-token contenders")
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="decodes per timed window")
    p.add_argument("--threads", type=_ints, default=None,
                   help="comma list (default: all cores, 1 when the machine is already busy)")
    p.add_argument("--onednn", choices=["default", "on", "off"], default="default",
                   help="set TF_ENABLE_ONEDNN_OPTS=1/0 before TensorFlow is imported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None, help=argparse.SUPPRESS)  # a child's results
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


def random_inputs(config, args, batch):
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(2, config.vocab_size, size=(batch, args.inputs_length), dtype=np.int32)
    return ids, np.ones_like(ids)


def compiled(model, fn):
    """`fn(ids, mask)` compiled as `compile_decoder` compiles decoding (XLA; on JAX with the
    weights as arguments), numpy out."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        variables = list(model.variables)

        def stateless(values, ids, mask):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(ids, mask)

        jitted = jax.jit(stateless)
        return lambda ids, mask: jax.tree.map(
            np.asarray, jitted([v.value for v in variables], ids, mask))
    import tensorflow as tf

    function = tf.function(fn, jit_compile=True)
    return lambda ids, mask: tf.nest.map_structure(np.asarray, function(ids, mask))


# -- contenders -------------------------------------------------------------------------------------

class T5preDecoder:
    """`compile_decoder` as `t5pre predict` runs it (EOS disabled)."""

    def __init__(self, name, model, ids, mask, method, new_tokens, beam_size, xla=True):
        from t5pre.models.decode_settings import DecodeSettings
        from t5pre.models.decoding import compile_decoder

        self.name = name
        settings = DecodeSettings(beam_size=beam_size if method == "beam" else 1,
                                  max_decode_length=new_tokens, max_input_length=ids.shape[1],
                                  xla=xla)
        self._run = compile_decoder(model, settings, eos_id=-1)
        self._args = (ids, mask)

    def __call__(self):
        return self._run(*self._args)[0]


class T5preEncoder:
    def __init__(self, name, model, ids, mask):
        self.name = name
        self._run = compiled(model, lambda i, m: model.cross_key_values(model.encode(i, m)))
        self._args = (ids, mask)

    def __call__(self):
        return self._run(*self._args)


class T5preUncached:
    """Greedy without a cache: one full decoder pass over a fixed-length buffer per new token."""

    def __init__(self, name, model, ids, mask, new_tokens):
        import tensorflow as tf
        from keras import ops

        self.name = name
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


class HFGenerate:
    def __init__(self, name, hf, ids, mask, method, new_tokens, beam_size):
        import torch

        self.name = name
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


class HFEncoder:
    def __init__(self, name, hf, ids, mask):
        import torch

        self.name = name
        self._torch = torch
        self._hf = hf
        self._inputs = dict(input_ids=torch.from_numpy(ids.astype(np.int64)),
                            attention_mask=torch.from_numpy(mask.astype(np.int64)))

    def __call__(self):
        with self._torch.inference_mode():
            return self._hf.encoder(**self._inputs).last_hidden_state.numpy()


# -- one process: one backend, one thread count -----------------------------------------------------


def interleaved_windows(contenders, windows: int, repeats: int) -> dict:
    """``{name: {"wall": [...], "cpu": [...]}}`` seconds per call of each contender, timed in
    ``windows`` rounds that alternate the order (a drifting machine load hits all alike)."""
    times = {c.name: {"wall": [], "cpu": []} for c in contenders}
    for w in range(windows):
        for c in (contenders if w % 2 == 0 else contenders[::-1]):
            wall, cpu = timed(lambda: [c() for _ in range(repeats)])
            times[c.name]["wall"].append(wall / repeats)
            times[c.name]["cpu"].append(cpu / repeats)
    return times

def contenders_for(args, backend, config, hf, model, method, batch):
    """(main contenders, breakdown contenders) of one method and batch size."""
    ids, mask = random_inputs(config, args, batch)
    k, n = args.beam_size, args.new_tokens
    tag = f"{method} b{batch}"
    main = [T5preDecoder(f"t5pre {tag}", model, ids, mask, method, n, k)]
    if args.graph and backend == "tensorflow":
        main.append(T5preDecoder(f"t5pre graph {tag}", model, ids, mask, method, n, k, xla=False))
    if args.uncached and method == "greedy" and backend == "tensorflow":
        main.append(T5preUncached(f"t5pre uncached {tag}", model, ids, mask, n))
    if not args.no_hf:
        main.append(HFGenerate(f"HF generate {tag}", hf, ids, mask, method, n, k))
    breakdown = []
    if args.breakdown and n > 1:
        breakdown.append(T5preDecoder(f"t5pre 1 token {tag}", model, ids, mask, method, 1, k))
        if not args.no_hf:
            breakdown.append(HFGenerate(f"HF generate 1 token {tag}", hf, ids, mask, method, 1, k))
        if method == methods_of(args)[0]:  # the encoder does not depend on the method
            breakdown.append(T5preEncoder(f"t5pre encoder b{batch}", model, ids, mask))
            if not args.no_hf:
                breakdown.append(HFEncoder(f"HF encoder b{batch}", hf, ids, mask))
    return main, breakdown


def methods_of(args):
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        if method not in ("greedy", "beam"):
            raise SystemExit(f"unknown method {method!r}")
    return methods


def run_one(args, backend, threads):
    """Time every contender of this process; returns the result rows (and prints tables)."""
    set_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    config, hf, model = build_models(args)
    print(f"model {config.name or args.size}: d_model={config.d_model} d_ff={config.d_ff} "
          f"heads={config.num_heads}x{config.d_kv} layers={config.num_encoder_layers}+"
          f"{config.num_decoder_layers} vocab={config.vocab_size}; same random weights both sides")
    print(f"backend {backend}; threads {threads} (TF intra/inter-op pools, torch); inputs "
          f"{args.inputs_length}, {args.new_tokens} new tokens, beam {args.beam_size}; "
          f"{args.windows} windows x {args.repeats} decodes; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for batch in args.batch:
        for method in methods_of(args):
            main, breakdown = contenders_for(args, backend, config, hf, model, method, batch)
            contenders = main + breakdown
            outputs = {}
            for c in contenders:  # first call: tracing / compiling, and the tokens to compare
                t0 = time.perf_counter()
                outputs[c.name] = c()
                print(f"  ready: {c.name} ({time.perf_counter() - t0:.1f} s first call)",
                      flush=True)
            times = interleaved_windows(contenders, args.windows, args.repeats)
            rows += report(args, backend, threads, method, batch, main, breakdown, times, outputs)
    return rows


def _median(times, name, key="wall"):
    return statistics.median(times[name][key])


def report(args, backend, threads, method, batch, main, breakdown, times, outputs):
    tag = f"{method} b{batch}"
    hf_name = f"HF generate {tag}"
    reference = times.get(hf_name)
    print(f"\n{method}, batch {batch}, {threads} thread(s), {backend}")
    print(f"{'contender':34s} {'s/decode':>9s} {'spread':>6s} {'cpu s':>8s} {'cores':>5s} "
          f"{'tokens/s':>9s} {'x HF':>5s} {'x HF cpu':>8s} {'= HF tokens':>11s}")
    rows = []
    for c in main:
        wall, cpu = _median(times, c.name), _median(times, c.name, "cpu")
        spread = (max(times[c.name]["wall"]) - min(times[c.name]["wall"])) / wall
        ratio = cpu_ratio = same = ""
        row = dict(backend=backend, threads=threads, method=method, batch=batch,
                   contender=c.name.replace(f" {tag}", ""), wall=wall, cpu=cpu, spread=spread,
                   load=os.getloadavg()[0])
        if reference is not None and c.name != hf_name:
            row["x_hf"] = _median(times, hf_name) / wall
            row["x_hf_cpu"] = _median(times, hf_name, "cpu") / cpu
            row["same_tokens"] = float((np.asarray(outputs[c.name])
                                        == np.asarray(outputs[hf_name])).mean())
            ratio, cpu_ratio = f"{row['x_hf']:.2f}", f"{row['x_hf_cpu']:.2f}"
            same = f"{row['same_tokens']:.1%}"
        rows.append(row)
        print(f"{c.name.replace(f' {tag}', ''):34s} {wall:9.4f} {spread:6.0%} {cpu:8.4f} "
              f"{cpu / wall:5.2f} {batch * args.new_tokens / wall:9.0f} {ratio:>5s} "
              f"{cpu_ratio:>8s} {same:>11s}")
    if breakdown:
        print("  where the time goes (ms, wall; per step = (full - one token) / "
              f"{args.new_tokens - 1}):")
        for side, full in (("t5pre", f"t5pre {tag}"), ("HF", hf_name)):
            one = f"{side} 1 token {tag}" if side == "t5pre" else f"HF generate 1 token {tag}"
            if full not in times or one not in times:
                continue
            encoder = f"{side} encoder b{batch}"
            total, first = _median(times, full), _median(times, one)
            step = (total - first) / (args.new_tokens - 1)
            enc = (f"encoder {1000 * _median(times, encoder):7.1f}, " if encoder in times
                   else "")
            print(f"    {side:6s} {enc}1-token decode {1000 * first:7.1f}, per step "
                  f"{1000 * step:6.2f} ({(total - first) / total:4.0%} of the decode in steps 2+)"
                  f", cores {_median(times, full, 'cpu') / total:4.2f}")
            rows.append(dict(backend=backend, threads=threads, method=method, batch=batch,
                             contender=f"{side} breakdown", first_token=first, per_step=step,
                             encoder=_median(times, encoder) if encoder in times else None))
    print(f"  load average now {os.getloadavg()[0]:.1f}", flush=True)
    return rows


# -- the parent: one child per backend and thread count ----------------------------------------------

def summary(rows, args):
    print("\n== summary: t5pre (compile_decoder, the default path) vs HF generate ==")
    print(f"{'backend':10s} {'thr':>3s} {'method':6s} {'batch':>5s} {'t5pre s':>8s} "
          f"{'HF s':>8s} {'x HF':>5s} {'x HF cpu':>8s} {'t5pre cores':>11s} {'HF cores':>8s} "
          f"{'= HF':>6s} {'graph x HF':>10s} {'load':>5s}")
    keyed = {(r["backend"], r["threads"], r["method"], r["batch"], r["contender"]): r
             for r in rows}
    for (backend, threads, method, batch, contender), r in keyed.items():
        if contender != "t5pre":
            continue
        hf = keyed.get((backend, threads, method, batch, "HF generate"))
        graph = keyed.get((backend, threads, method, batch, "t5pre graph"))
        if hf is None:
            continue
        print(f"{backend:10s} {threads:3d} {method:6s} {batch:5d} {r['wall']:8.4f} "
              f"{hf['wall']:8.4f} {r['x_hf']:5.2f} {r['x_hf_cpu']:8.2f} "
              f"{r['cpu'] / r['wall']:11.2f} {hf['cpu'] / hf['wall']:8.2f} "
              f"{r['same_tokens']:6.1%} {graph['x_hf'] if graph else float('nan'):10.2f} "
              f"{r['load']:5.1f}")
    print("x HF = HF time / t5pre time (>1: t5pre faster), by wall and by process CPU time; "
          "cores = CPU time / wall time; '= HF': share of tokens equal to HF's; graph x HF: "
          "the xla=False path; load: the load average when the row was measured")


def main(argv=None):
    args = parse_args(argv)
    if args.onednn != "default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    backends = [b.strip() for b in (args.backend or os.environ.get("KERAS_BACKEND")
                                    or "tensorflow").split(",") if b.strip()]
    threads = args.threads or [default_threads()]
    if len(backends) == 1 and len(threads) == 1:
        backend, n = backends[0], threads[0]
        os.environ["KERAS_BACKEND"] = backend
        if backend == "jax" and n == 1:
            # XLA's flags hold Eigen to one thread, but JAX's runtime still runs independent
            # pieces of a program on its own threads: pin the process (torch too) to one core.
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + " --xla_cpu_multi_thread_eigen=false").strip()
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        rows = run_one(args, backend, n)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(rows, f)
        else:
            summary(rows, args)
        return rows
    rows = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for backend in backends:
        for n in threads:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                out = f.name
            command = [sys.executable, os.path.abspath(__file__), *passthrough,
                       "--backend", backend, "--threads", str(n), "--json-out", out]
            print(f"\n===== {backend}, {n} thread(s) =====", flush=True)
            subprocess.run(command, check=True)
            with open(out) as f:
                rows += json.load(f)
            os.unlink(out)
    summary(rows, args)
    return rows


if __name__ == "__main__":
    main()
