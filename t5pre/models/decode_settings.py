"""`DecodeSettings`: how text is generated, the one type shared by predict, evaluate,
fine-tuning's periodic evaluation and export.

Lengths count tokens with EOS included: `max_input_length` bounds the encoder input (the text is
cut to `max_input_length - 1` tokens, then EOS), `max_decode_length` the generated tokens. `None`
lengths are filled from what the model was trained at (`resolved_for`). `beam_size` 1 is greedy
decoding, more is beam search with T5's length penalty `((5 + length) / 6) ** length_penalty`;
`sample=True` draws tokens instead (`temperature`, `top_k`, `top_p`, `seed`). `xla` (default on)
compiles the whole decoding loop with XLA on the TensorFlow backend (`compile_decoder`; JAX always
does): the same tokens, faster; off, it runs as a plain `tf.function` graph.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Optional

from t5pre.errors import ConfigError

DEFAULT_MAX_INPUT_LENGTH = 512
DEFAULT_MAX_DECODE_LENGTH = 128
DEFAULT_LENGTH_PENALTY = 0.6  # T5/t5x beam-search alpha

#: How the command line spells each field (error messages name the flag a user typed).
FLAGS = {"beam_size": "--beam-size", "length_penalty": "--length-penalty",
         "max_decode_length": "--targets-length", "max_input_length": "--inputs-length",
         "xla": "--no-xla"}


@dataclasses.dataclass
class DecodeSettings:
    beam_size: int = 1
    length_penalty: float = DEFAULT_LENGTH_PENALTY
    max_decode_length: Optional[int] = None
    max_input_length: Optional[int] = None
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    xla: bool = True

    # ------------------------------------------------------------------ checking
    def validate(self, names: Optional[dict] = None) -> "DecodeSettings":
        """Raises ConfigError naming the field (as `names[field]`, default: its CLI flag)."""
        name = lambda field: (names or FLAGS).get(field, field)  # noqa: E731
        _check_int(name("beam_size"), self.beam_size, 1)
        _check_int(name("top_k"), self.top_k, 0)
        _check_int(name("seed"), self.seed, 0)
        _check_int(name("max_decode_length"), self.max_decode_length, 1, optional=True)
        # one token of text plus EOS is the least an encoder input can hold
        _check_int(name("max_input_length"), self.max_input_length, 2, optional=True)
        _check_number(name("length_penalty"), self.length_penalty, ">= 0",
                      _is_number(self.length_penalty) and self.length_penalty >= 0)
        _check_number(name("temperature"), self.temperature, "> 0",
                      _is_number(self.temperature) and self.temperature > 0)
        _check_number(name("top_p"), self.top_p, "in (0, 1]",
                      _is_number(self.top_p) and 0 < self.top_p <= 1)
        for field in ("sample", "xla"):
            value = getattr(self, field)
            if not isinstance(value, bool):
                raise ConfigError(f"{name(field)} must be true or false, got {value!r}")
        if self.sample and self.beam_size != 1:
            raise ConfigError(f"{name('sample')} draws one sequence; it cannot be combined with "
                              f"{name('beam_size')} {self.beam_size}")
        return self

    # ------------------------------------------------------------------ derived
    @property
    def method(self) -> str:
        """The `t5pre.models.decoding.decode` method: greedy, beam or sample."""
        if self.sample:
            return "sample"
        return "greedy" if self.beam_size == 1 else "beam"

    def decode_kwargs(self) -> dict:
        """Keyword arguments of `t5pre.models.decoding.decode` (besides the inputs); needs
        `max_decode_length` set."""
        if self.max_decode_length is None:
            raise ConfigError("decoding needs max_decode_length set (resolve the settings first)")
        kwargs = {"max_length": int(self.max_decode_length), "method": self.method}
        if self.method == "beam":
            kwargs.update(beam_size=int(self.beam_size), alpha=float(self.length_penalty))
        elif self.method == "sample":
            kwargs.update(temperature=float(self.temperature), top_k=int(self.top_k),
                          top_p=float(self.top_p), seed=int(self.seed))
        return kwargs

    def resolved_for(self, sequence_length: Optional[dict]) -> "DecodeSettings":
        """Unset lengths filled from `{"inputs": N, "targets": M}` (the lengths the model was
        trained or fine-tuned at), else from the defaults (512 / 128)."""
        lengths = sequence_length or {}
        inputs = lengths.get("inputs") or DEFAULT_MAX_INPUT_LENGTH
        targets = lengths.get("targets") or DEFAULT_MAX_DECODE_LENGTH
        return dataclasses.replace(
            self, max_input_length=self.max_input_length or max(int(inputs), 2),
            max_decode_length=self.max_decode_length or int(targets)).validate()

    def describe(self) -> str:
        """`greedy`, `beam 4, length penalty 0.6` or `sampling (temperature 0.7, ...)`."""
        if self.method == "beam":
            return f"beam {self.beam_size}, length penalty {self.length_penalty}"
        if self.method == "sample":
            return (f"sampling (temperature {self.temperature}, top-k {self.top_k}, "
                    f"top-p {self.top_p}, seed {self.seed})")
        return "greedy"

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "decode settings") -> "DecodeSettings":
        """The inverse of `to_dict` (`method` is derived, so it is only checked); unknown keys
        and bad values are ConfigErrors naming `where` and the key."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        fields = [f.name for f in dataclasses.fields(cls)]
        values = dict(data)
        method = values.pop("method", None)
        for key in values:
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}: unknown key {key!r}{hint}; known keys: "
                                  f"{', '.join(['method'] + fields)}")
        settings = cls(**values).validate({f: f"{where}: {f}" for f in fields})
        if method is not None and method != settings.method:
            raise ConfigError(f"{where}: method {method!r} does not match beam_size "
                              f"{settings.beam_size} / sample {settings.sample} "
                              f"(which mean {settings.method!r})")
        return settings


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value, least: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")


def _check_number(name: str, value, rule: str, ok: bool) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {rule}, got {value!r}")
