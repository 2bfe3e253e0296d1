"""``t5pre predict``: generate text with a model directory, one output line per input."""

from __future__ import annotations

import sys

from t5pre.errors import ConfigError, DataError

HELP = """\
Generate text with a trained model directory (latest checkpoint, or --checkpoint STEP), a
fine-tuning run's best/ directory, or a pretrained directory (save_pretrained / t5pre convert
hf: model.weights.h5 + spiece.model).

Inputs are the TEXT arguments, or the lines of --input-file ("-" reads stdin); one generated
line is printed per input, in order (newlines inside an output are written as spaces so that
line i of the output always answers input i). Files are decoded in batches of --batch-size.

Each input is cut to --inputs-length - 1 tokens and EOS is appended; outputs have at most
--targets-length tokens. Both default to the lengths the model was trained or fine-tuned at
(512 / 128 for a directory that does not record them). --beam-size 1 is greedy decoding;
--beam-size K > 1 is beam search with length penalty ((5 + length) / 6) ** alpha
(--length-penalty, default 0.6). This is the same decoding as the SavedModel written by
t5pre export.

example:
  t5pre predict --model-dir runs/ft/best "summarize: The quick brown fox ..."
  t5pre predict --model-dir runs/ft --beam-size 4 --input-file inputs.txt > outputs.txt
"""


def register(subparsers):
    from t5pre.cli.inference import add_inference_parser

    parser = add_inference_parser(subparsers, "predict",
                                  help="generate text with a model directory", description=HELP)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="input texts")
    parser.add_argument("--input-file", default=None, metavar="FILE",
                        help="read one input per line (- reads stdin)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per batch (default: 32)")
    parser.add_argument("--scores", action="store_true",
                        help="prefix each output with its score and a tab")
    parser.set_defaults(func=run)


def _read_lines(path: str):
    """Yield the lines of `path` (or stdin for `-`) without their newline."""
    if path == "-":
        for line in sys.stdin:
            yield line.rstrip("\r\n")
        return
    try:
        f = open(path, "rb")  # decoded line by line, so that an error names its line
    except FileNotFoundError:
        raise DataError(f"{path}: input file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an input file") from None
    with f:
        for line_number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{line_number}: not valid UTF-8 ({e.reason} at byte "
                                f"{e.start})") from None
            if line_number == 1:
                line = line.lstrip("\ufeff")  # a UTF-8 byte-order mark is not text
            yield line.rstrip("\r\n")


def _check_first(lines):
    """Read the first line now (raising the file's errors), then yield everything lazily."""
    import itertools

    lines = iter(lines)
    first = list(itertools.islice(lines, 1))
    return itertools.chain(first, lines)


def run(args):
    if args.texts and args.input_file:
        raise ConfigError("give input TEXT arguments or --input-file, not both")
    if not args.texts and not args.input_file:
        raise ConfigError("no input: give TEXT arguments, or --input-file FILE (`-` for stdin)")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    from t5pre.cli.inference import decode_settings

    settings = decode_settings(args)
    texts = args.texts if args.texts else _read_lines(args.input_file)
    if args.input_file and args.input_file != "-":
        texts = _check_first(texts)  # a missing or unreadable file fails before the model loads
    from t5pre.evaluation.predict import Predictor

    predictor = Predictor.from_model_dir(args.model_dir, args.checkpoint, settings,
                                         batch_size=args.batch_size)
    out = sys.stdout
    for text, score in predictor.iter_predictions(texts):
        line = " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text
        out.write(f"{score:.4f}\t{line}\n" if args.scores else line + "\n")
        out.flush()
    return 0
