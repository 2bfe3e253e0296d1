"""Strings in, strings out: the exported SavedModel against `t5pre predict`'s library decoding
and Hugging Face tokenizer + `generate`, the same model and vocabulary, one process per thread
count.

A random tiny T5 with t5pre's shipped vocabulary (`default_vocabulary()`, 4100 ids) is exported
three ways: `export_saved_model` (the serving SavedModel: tokenizer, decoding and detokenizer in
one TensorFlow graph; once with the default `xla` decoding and once with `xla=False`),
`export_hf` (safetensors + tokenizer.json). Contenders, each timed on the same texts:

* ``SavedModel``: `tf.saved_model.load(export).signatures["serving_default"](texts)`, plain
  TensorFlow (no Keras, no t5pre code), outputs read back as Python strings.
* ``SavedModel graph``: the same export with `DecodeSettings(xla=False)`.
* ``t5pre predict (library)``: `Predictor(model, vocabulary, settings).predict(texts)`: Python
  SentencePiece, `compile_decoder`, detokenisation, what `t5pre predict` runs per batch.
* ``HF tokenizer + generate``: `AutoTokenizer` (the exported tokenizer.json) + `generate(
  num_beams=1|K, max_new_tokens=N)` + `batch_decode(skip_special_tokens=True)`, PyTorch.

EOS is on (a random model rarely emits it, so rows run to N tokens, on every side alike). The
parity column compares generated ids with HF's (the SavedModel's `generate_ids` signature,
`Predictor.generate_ids`, `generate`'s output): strings would differ where they should not
matter (HF's `skip_special_tokens` drops the sentinels a random model emits). Batch 1 is the latency figure, batch 32 the
throughput one. Texts: docstrings of t5pre's own source, each cut to `--inputs-length` tokens
(the SentencePiece model was trained on docstrings).

    python benchmarks/serving.py --onednn on --threads 1,2 --windows 5
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode import _ints, interleaved_windows  # noqa: E402
from train_step import default_threads, set_threads  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="tiny")
    p.add_argument("--batch", type=_ints, default=[1, 32], help="comma list of batch sizes")
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--beam-size", type=int, default=1, help="1: greedy (default)")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=_ints, default=None)
    p.add_argument("--onednn", choices=["default", "on", "off"], default="default")
    p.add_argument("--no-graph", dest="graph", action="store_false",
                   help="skip the xla=False SavedModel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def texts_from_docstrings(count):
    texts = []
    for path in sorted((REPO / "t5pre").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    texts.append(" ".join(doc.split()))
    if not texts:
        raise SystemExit("no docstrings found")
    return [texts[i % len(texts)] for i in range(count)]


def build(args, tmp):
    import dataclasses

    import keras
    import torch
    import transformers

    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.export import export_saved_model
    from t5pre.models import T5Config
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.hf_export import export_hf
    from t5pre.models.t5 import T5Model

    vocabulary = default_vocabulary()
    config = dataclasses.replace(T5Config.from_name(args.size), vocab_size=4224, dropout_rate=0.0)
    keras.utils.set_random_seed(args.seed)
    model = T5Model(config)
    settings = DecodeSettings(beam_size=args.beam_size, max_decode_length=args.new_tokens,
                              max_input_length=args.inputs_length)
    exports = {"SavedModel": export_saved_model(model, vocabulary, tmp / "xla", settings)}
    if args.graph:
        exports["SavedModel graph"] = export_saved_model(
            model, vocabulary, tmp / "graph", dataclasses.replace(settings, xla=False))
    export_hf(model, vocabulary, tmp / "hf")
    transformers.logging.set_verbosity_error()
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp / "hf").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp / "hf")
    torch.manual_seed(0)
    return model, vocabulary, settings, exports, hf, tokenizer


class SavedModel:
    def __init__(self, name, path, texts):
        import tensorflow as tf

        self.name = name
        loaded = tf.saved_model.load(str(path))
        self._serve = loaded.signatures["serving_default"]
        self._ids = loaded.signatures["generate_ids"]
        self._texts = tf.constant(texts)

    def __call__(self):
        return [t.decode("utf-8") for t in self._serve(inputs=self._texts)["outputs"].numpy()]

    def ids(self):
        return self._ids(inputs=self._texts)["ids"].numpy()


class Library:
    def __init__(self, name, model, vocabulary, settings, texts):
        from t5pre.evaluation.predict import Predictor

        self.name = name
        self._predictor = Predictor(model, vocabulary, settings, batch_size=len(texts))
        self._texts = texts

    def __call__(self):
        return self._predictor.predict(self._texts)

    def ids(self):
        return self._predictor.generate_ids(self._texts)[0]


class HF:
    def __init__(self, name, hf, tokenizer, args, texts):
        import torch

        self.name = name
        self._torch, self._hf, self._tokenizer, self._texts = torch, hf, tokenizer, texts
        self._max_length = args.inputs_length
        self._settings = dict(max_new_tokens=args.new_tokens, num_beams=args.beam_size,
                              do_sample=False, use_cache=True, decoder_start_token_id=0,
                              pad_token_id=0, eos_token_id=1,
                              length_penalty=0.6 if args.beam_size > 1 else 1.0)

    def _generate(self):
        with self._torch.inference_mode():
            inputs = self._tokenizer(self._texts, return_tensors="pt", padding=True,
                                     truncation=True, max_length=self._max_length)
            return self._hf.generate(**inputs, **self._settings)

    def __call__(self):
        return self._tokenizer.batch_decode(self._generate(), skip_special_tokens=True)

    def ids(self):
        ids = self._generate()[:, 1:].numpy()  # without the start token; 0 after EOS
        return np.pad(ids, [(0, 0), (0, self._settings["max_new_tokens"] - ids.shape[1])])


def run_one(args, threads):
    set_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, vocabulary, settings, exports, hf, tokenizer = build(args, pathlib.Path(tmp))
        print(f"threads {threads}; {settings.describe()}, inputs cut to {args.inputs_length} "
              f"tokens, {args.new_tokens} new tokens; {args.windows} windows; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        for batch in args.batch:
            texts = texts_from_docstrings(batch)
            contenders = [SavedModel(name, path, texts) for name, path in exports.items()]
            contenders += [Library("t5pre predict (library)", model, vocabulary, settings, texts),
                           HF("HF tokenizer + generate", hf, tokenizer, args, texts)]
            outputs = {}
            for c in contenders:
                t0 = time.perf_counter()
                c()
                outputs[c.name] = c.ids()
                print(f"  ready: {c.name} b{batch} ({time.perf_counter() - t0:.1f} s first call)",
                      flush=True)
            times = interleaved_windows(contenders, args.windows, args.repeats)
            ref = "HF tokenizer + generate"
            library = "t5pre predict (library)"
            print(f"\nbatch {batch}, {threads} thread(s)")
            print(f"{'contender':26s} {'s/batch':>8s} {'spread':>6s} {'cpu s':>7s} {'cores':>5s} "
                  f"{'texts/s':>8s} {'x HF':>5s} {'x HF cpu':>8s} {'x library':>9s} "
                  f"{'= HF ids':>8s}")
            for c in contenders:
                wall = statistics.median(times[c.name]["wall"])
                cpu = statistics.median(times[c.name]["cpu"])
                spread = (max(times[c.name]["wall"]) - min(times[c.name]["wall"])) / wall
                row = dict(threads=threads, batch=batch, contender=c.name, wall=wall, cpu=cpu,
                           spread=spread, load=os.getloadavg()[0],
                           x_hf=statistics.median(times[ref]["wall"]) / wall,
                           x_hf_cpu=statistics.median(times[ref]["cpu"]) / cpu,
                           x_library=statistics.median(times[library]["wall"]) / wall,
                           same_as_hf=float(np.mean(outputs[c.name] == outputs[ref])))
                rows.append(row)
                print(f"{c.name:26s} {wall:8.4f} {spread:6.0%} {cpu:7.4f} {cpu / wall:5.2f} "
                      f"{batch / wall:8.1f} {row['x_hf']:5.2f} {row['x_hf_cpu']:8.2f} "
                      f"{row['x_library']:9.2f} {row['same_as_hf']:8.1%}")
            print(f"  load average now {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def summary(rows):
    print("\n== summary (s per batch, wall; x HF / x library: their time / this one's) ==")
    print(f"{'thr':>3s} {'batch':>5s} {'contender':26s} {'s/batch':>8s} {'x HF':>5s} "
          f"{'x HF cpu':>8s} {'x library':>9s} {'= HF':>5s} {'load':>5s}")
    for r in rows:
        print(f"{r['threads']:3d} {r['batch']:5d} {r['contender']:26s} {r['wall']:8.4f} "
              f"{r['x_hf']:5.2f} {r['x_hf_cpu']:8.2f} {r['x_library']:9.2f} "
              f"{r['same_as_hf']:5.0%} {r['load']:5.1f}")


def main(argv=None):
    args = parse_args(argv)
    if args.onednn != "default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    os.environ["KERAS_BACKEND"] = "tensorflow"  # the SavedModel is a TensorFlow graph
    threads = args.threads or [default_threads()]
    if len(threads) == 1:
        rows = run_one(args, threads[0])
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(rows, f)
        else:
            summary(rows)
        return rows
    rows = []
    for n in threads:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        print(f"\n===== {n} thread(s) =====", flush=True)
        subprocess.run([sys.executable, os.path.abspath(__file__),
                        *(argv if argv is not None else sys.argv[1:]),
                        "--threads", str(n), "--json-out", out], check=True)
        with open(out) as f:
            rows += json.load(f)
        os.unlink(out)
    summary(rows)
    return rows


if __name__ == "__main__":
    main()
