"""The flags `t5pre predict`, `t5pre evaluate` and `t5pre export` share, spelled one way.

    --model-dir DIR  --checkpoint STEP  --beam-size K  --length-penalty ALPHA
    --inputs-length N  --targets-length N  --no-xla

Earlier spellings (`--beam`, `--max-input-length` / `--input-length`, `--max-decode-length` /
`--target-length`) are still accepted but hidden from `--help`; an error about a value names the
flag as the user typed it.
"""

from __future__ import annotations

import argparse

from t5pre.models.decode_settings import FLAGS

MODEL_HELP = "training model directory, fine-tuning best/ directory or save_pretrained directory"

#: field -> the old spellings still accepted.
ALIASES = {"beam_size": ("--beam",),
           "max_input_length": ("--max-input-length", "--input-length"),
           "max_decode_length": ("--max-decode-length", "--target-length")}


class _Spelled(argparse.Action):
    """Stores the value and remembers which spelling of the flag was used."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        spellings = dict(getattr(namespace, "flag_spellings", None) or {})
        spellings[self.dest] = option_string
        namespace.flag_spellings = spellings


def _add(parser, field: str, **kwargs) -> None:
    parser.add_argument(FLAGS[field], dest=field, action=_Spelled, **kwargs)
    for alias in ALIASES.get(field, ()):
        parser.add_argument(alias, dest=field, action=_Spelled, type=kwargs.get("type"),
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_inference_parser(subparsers, name: str, help: str, description: str):
    """The parser of a sub-command that decodes with a model directory (``predict``,
    ``export``): ``description`` shown as written, then the model and the decoding flags."""
    parser = subparsers.add_parser(name, help=help, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, MODEL_HELP)
    add_decode_arguments(parser)
    return parser


def add_model_arguments(parser, model_help: str) -> None:
    parser.add_argument("--model-dir", required=True, metavar="DIR", help=model_help)
    parser.add_argument("--checkpoint", default=None, metavar="STEP",
                        help="checkpoint step (or path) of a training model directory "
                             "(default: the latest)")


def add_decode_arguments(parser) -> None:
    """`--beam-size`, `--length-penalty`, `--inputs-length`, `--targets-length`, `--no-xla`."""
    from t5pre.models.decode_settings import DEFAULT_MAX_DECODE_LENGTH, DEFAULT_MAX_INPUT_LENGTH

    _add(parser, "beam_size", type=int, default=1, metavar="K",
         help="beam size; 1 = greedy decoding (default: 1)")
    _add(parser, "length_penalty", type=float, default=0.6, metavar="ALPHA",
         help="beam-search length penalty alpha, ((5 + length) / 6) ** alpha (default: 0.6, "
              "as T5)")
    _add(parser, "max_input_length", type=int, default=None, metavar="N",
         help="most input tokens, EOS included (default: the inputs length the model was "
              f"trained or fine-tuned at, else {DEFAULT_MAX_INPUT_LENGTH})")
    _add(parser, "max_decode_length", type=int, default=None, metavar="N",
         help="most generated tokens, EOS included (default: the targets length the model was "
              f"trained or fine-tuned at, else {DEFAULT_MAX_DECODE_LENGTH})")
    parser.add_argument(FLAGS["xla"], dest="xla", action="store_false",
                        help="run the decoding loop as a plain TensorFlow graph instead of one "
                             "XLA-compiled program (the same tokens; XLA is faster but compiles "
                             "once per padded batch shape, a few seconds each; JAX always "
                             "compiles)")


def decode_settings(args):
    """The `DecodeSettings` of the parsed flags (lengths may be None = the model's); a bad
    value is a ConfigError naming the flag as typed."""
    from t5pre.models.decode_settings import DecodeSettings

    names = {**FLAGS, **(getattr(args, "flag_spellings", None) or {})}
    return DecodeSettings(beam_size=args.beam_size, length_penalty=args.length_penalty,
                          max_decode_length=args.max_decode_length,
                          max_input_length=args.max_input_length,
                          xla=getattr(args, "xla", True)).validate(names)

