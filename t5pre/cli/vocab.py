"""``t5pre vocab``: train a SentencePiece vocabulary in T5's layout, and inspect one."""

from __future__ import annotations

import glob
import os
import time

from t5pre.errors import ConfigError, DataError

TRAIN_HELP = """\
Train a SentencePiece unigram vocabulary in T5's id layout (pad 0, eos 1, unk 2, no bos) with
byte fallback (no text is ever <unk>), and write PREFIX.model atomically.

--vocab-size is the TOTAL number of ids, extra ids included: --vocab-size 32100 --extra-ids 100
trains 32000 SentencePiece pieces and puts <extra_id_0> at id 32099, <extra_id_99> at 32000,
exactly like T5. The sentinels are written into the .model file (as user-defined pieces), so
plain sentencepiece, tensorflow-text and t5pre all see the same vocabulary.

Text comes from exactly one of:
  --task NAME          the raw source of a registered task (--field, default "text" or every text field)
  --files GLOB ...     text files (one sentence per line) or .jsonl files (--field, default "text")
  --default-corpus     the embedded default corpus (Python/Keras docstrings)
"""


def register(subparsers):
    from t5pre.cli.common import add_module_argument

    parser = subparsers.add_parser("vocab", help="train or inspect a SentencePiece vocabulary")
    sub = parser.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)

    train = sub.add_parser(
        "train",
        help="train a SentencePiece vocabulary (T5 layout)",
        description=TRAIN_HELP,
        formatter_class=_raw_formatter(),
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="read the raw source text of this registered task")
    source.add_argument("--files", nargs="+", metavar="GLOB", help="text or .jsonl files (globs)")
    source.add_argument("--default-corpus", action="store_true", help="the embedded docstring corpus")
    train.add_argument("--split", default="train", help="split of --task / --default-corpus (default: train)")
    train.add_argument(
        "--field",
        action="append",
        help="field(s) to read from --task or .jsonl files (repeatable; default: text, or every text field of the task's source)",
    )
    train.add_argument("--vocab-size", type=int, required=True, help="total ids INCLUDING the extra ids")
    train.add_argument("--extra-ids", type=int, default=100, help="sentinels <extra_id_*> (default: 100)")
    train.add_argument(
        "--max-sentences",
        type=int,
        default=1_000_000,
        help="lines sampled for training (SentencePiece input_sentence_size; 0 = all; default: 1000000)",
    )
    train.add_argument("--character-coverage", type=float, default=0.9995)
    train.add_argument("--no-byte-fallback", action="store_true", help="unknown characters become <unk>")
    train.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.model")
    add_module_argument(train)
    train.set_defaults(func=run_train)

    info = sub.add_parser("info", help="print a vocabulary's sizes and special ids")
    info.add_argument("model", help="a .model file or a model directory (spiece.model + vocab.json)")
    info.add_argument("--extra-ids", type=int, default=None, help="default: from vocab.json, else 100")
    info.set_defaults(func=run_info)

    encode = sub.add_parser("encode", help="show the ids and pieces of a text")
    encode.add_argument("model", help="a .model file or a model directory")
    encode.add_argument("text")
    encode.add_argument("--extra-ids", type=int, default=None)
    encode.set_defaults(func=run_encode)


def _raw_formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter


# ------------------------------------------------------------------------------------ train
def _texts_from_files(patterns, fields, read=None):
    """The texts of the --files; ``read`` (a list of one int), when given, counts the
    characters of every line read, JSON syntax and blank lines included (progress)."""
    import json

    files = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise DataError(f"--files: no file matches {pattern!r}")
        files.extend(matched)
    fields = fields or ["text"]
    for path in files:
        is_json = path.endswith((".jsonl", ".json", ".jsonl.gz"))
        opener = _open_text(path)
        with opener as f:
            for number, line in enumerate(f, start=1):
                if read is not None:
                    read[0] += len(line)
                if not line.strip():
                    continue
                if not is_json:
                    yield line
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{path}:{number}: malformed JSON ({e})") from None
                for field in fields:
                    if not isinstance(record, dict) or field not in record:
                        raise DataError(f"{path}:{number}: missing key {field!r}")
                    value = record[field]
                    values = value if isinstance(value, list) else [value]
                    for v in values:
                        if isinstance(v, str):
                            yield v


def _open_text(path):
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _texts_from_task(name, split, fields):
    import tensorflow as tf

    from t5pre.data.registry import get_task
    from t5pre.data.sources import data_errors

    task = get_task(name)
    task.check_split(split)
    dataset = task.source.get_dataset(split=split, shuffle=False, seed=0)
    spec = dataset.element_spec
    text_fields = [k for k, s in spec.items() if s.dtype == tf.string]
    if fields:
        missing = [f for f in fields if f not in spec]
        if missing:
            raise DataError(f"task {name!r}: its source has no field {missing[0]!r} (it has {sorted(spec)})")
    else:
        fields = ["text"] if "text" in text_fields else text_fields
    if not fields:
        raise DataError(f"task {name!r}: its source has no text fields ({sorted(spec)})")
    with data_errors():
        for example in dataset.as_numpy_iterator():
            for field in fields:
                value = example[field]
                for v in (value if hasattr(value, "__len__") and not isinstance(value, bytes) else [value]):
                    yield v.decode("utf-8", errors="replace")


def run_train(args):
    import functools

    from t5pre.cli.common import import_modules
    from t5pre.data.vocabulary import train_vocabulary
    from t5pre.files import check_output_path
    from t5pre.progress import Heartbeat

    if args.vocab_size <= args.extra_ids:
        raise ConfigError(f"--vocab-size {args.vocab_size} must exceed --extra-ids {args.extra_ids} (it counts them)")
    check_output_path(args.out + ".model", flag="--out")  # before reading any text
    if args.task:
        import_modules(args.module)
        texts = _texts_from_task(args.task, args.split, args.field)
        what = f"task {args.task} ({args.split})"
    elif args.files:
        read = [0]  # characters of the files read so far
        texts = _texts_from_files(args.files, args.field, read)
        what = " ".join(args.files)
    else:
        from t5pre.data.default_corpus import default_corpus_texts

        texts = default_corpus_texts(args.split)
        what = f"default corpus ({args.split})"
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    counted = _Counter(texts, total_bytes=_total_bytes(args.files) if args.files else None,
                       read=read if args.files else None)
    with Heartbeat(counted.progress_line, functools.partial(print, flush=True), PROGRESS_EVERY):
        vocab = train_vocabulary(
            counted,
            args.out,
            vocab_size=args.vocab_size,
            extra_ids=args.extra_ids,
            max_sentences=args.max_sentences or None,
            character_coverage=args.character_coverage,
            byte_fallback=not args.no_byte_fallback,
        )
    seconds = time.time() - start
    print(f"trained on {what}: {counted.documents} documents, {counted.chars / 1e6:.1f} M characters in {seconds:.1f} s")
    print(
        f"wrote {args.out}.model: vocab_size {vocab.vocab_size} = {vocab.num_base_pieces} pieces "
        f"+ {vocab.extra_ids} extra ids (<extra_id_0> = {vocab.sentinel(0) if vocab.extra_ids else '-'}), "
        f"{os.path.getsize(args.out + '.model') / 1024:.0f} KB"
    )
    sample = counted.sample
    if sample:
        tokens = sum(len(vocab.encode(t)) for t in sample)
        chars = sum(len(t) for t in sample)
        print(f"characters per token on {len(sample)} sample documents: {chars / max(tokens, 1):.2f}")
    return 0


PROGRESS_EVERY = 10.0  # seconds between two progress lines


def _total_bytes(patterns):
    """The size of the --files (None when one is compressed: its text size is not known)."""
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if any(p.endswith(".gz") for p in paths):
        return None
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p)) or None


class _Counter:
    """Wraps the text iterator to count documents and characters and keep a small sample;
    :meth:`progress_line` says how far reading (then SentencePiece's training) has got."""

    def __init__(self, texts, total_bytes=None, read=None, clock=time.monotonic):
        from t5pre.progress import Eta

        self._texts = texts
        self._read = read  # [characters of the files read], when the texts come from files
        self.documents = 0
        self.chars = 0
        self.sample = []
        self.total_bytes = total_bytes
        self._clock = clock
        self.started = clock()
        self.read_seconds = None  # set when the text is exhausted
        self._eta = Eta(clock)
        self._eta.mark(0)

    def __iter__(self):
        for text in self._texts:
            self.documents += 1
            self.chars += len(text)
            if len(self.sample) < 200:
                self.sample.append(text)
            yield text
        self.read_seconds = self._clock() - self.started

    def progress_line(self) -> str:
        """While reading: ``vocab: read 1,234 documents | 5.6M characters | 1.2M chars/s``, then
        ``| 40% of the files | reading ETA 12s`` (from the --files' size: characters of their
        lines read, of their bytes) or ``| 32s elapsed``; while SentencePiece trains:
        ``vocab: training SentencePiece on 1,234 documents (5.6M characters) | 1m02s elapsed``."""
        from t5pre.progress import fmt_duration, fmt_rate

        elapsed = max(self._clock() - self.started, 1e-9)
        if self.read_seconds is not None:
            return (f"vocab: training SentencePiece on {self.documents:,} documents "
                    f"({fmt_rate(self.chars)} characters) | "
                    f"{fmt_duration(elapsed - self.read_seconds)} elapsed")
        parts = [f"vocab: read {self.documents:,} documents", f"{fmt_rate(self.chars)} characters",
                 f"{fmt_rate(self.chars / elapsed)} chars/s"]
        if self.total_bytes:
            done = self._read[0] if self._read is not None else self.chars
            self._eta.mark(done)
            parts += [f"{min(99, int(100 * done / self.total_bytes))}% of the files",
                      f"reading ETA {fmt_duration(self._eta.seconds_left(self.total_bytes))}"]
        else:
            parts.append(f"{fmt_duration(elapsed)} elapsed")
        return " | ".join(parts)


# ------------------------------------------------------------------------------- info/encode
def _load(path, extra_ids):
    from t5pre.data.vocabulary import SentencePieceVocabulary, load_vocabulary
    from t5pre.models.layout import VOCABULARY_FILE

    if os.path.isdir(path) and extra_ids is None:
        return load_vocabulary(path)
    if os.path.isdir(path):
        path = os.path.join(path, VOCABULARY_FILE)
    return SentencePieceVocabulary(path, extra_ids=100 if extra_ids is None else extra_ids)


def run_info(args):
    vocab = _load(args.model, args.extra_ids)
    print(f"vocab_size      {vocab.vocab_size}")
    print(f"pieces          {vocab.num_base_pieces}")
    print(f"extra_ids       {vocab.extra_ids}")
    print(f"pad/eos/unk     {vocab.pad_id}/{vocab.eos_id}/{vocab.unk_id}")
    if vocab.extra_ids:
        print(f"<extra_id_0>    {vocab.sentinel(0)}")
        print(f"<extra_id_{vocab.extra_ids - 1}>   {vocab.sentinel(vocab.extra_ids - 1)}")
    return 0


def run_encode(args):
    vocab = _load(args.model, args.extra_ids)
    ids = vocab.encode(args.text)
    print("ids:    " + " ".join(str(i) for i in ids))
    print("pieces: " + " ".join(vocab.id_to_piece(i) for i in ids))
    print("decode: " + vocab.decode(ids))
    return 0
