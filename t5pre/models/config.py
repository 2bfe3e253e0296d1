"""`T5Config`: the hyper-parameters of a T5 encoder-decoder, read from `configs/model/NAME.yaml`.

`vocab_size` is the number of *embedding rows*. It is deliberately separate from the size of the
vocabulary that tokenises text: T5's SentencePiece has 32000 pieces + 100 sentinels = 32100 ids,
but its checkpoints carry 32128 rows (padded to a multiple of 128 for fast matmuls). Mixing the
two up is the commonest T5 trap, so the two numbers are explicit and `resolve_vocab_size` checks
them against each other. A yaml may leave `vocab_size: null`, meaning "derive it from the
vocabulary used for training: its size rounded up to a multiple of 128".

Precision is not a config field: it is the Keras mixed-precision policy in force when the model
is built (`keras.mixed_precision.set_global_policy("mixed_bfloat16")`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import pathlib
from typing import Optional

from t5pre.errors import ConfigError

FEED_FORWARD_PROJECTIONS = ("gated-gelu", "relu")
VOCAB_MULTIPLE = 128


@dataclasses.dataclass
class T5Config:
    """Dimensions of a T5 model.

    Defaults are those of T5.1.1 (gated-GELU, untied output head, no dropout in pretraining).
    `tie_word_embeddings=True` with `feed_forward_proj="relu"` is the original T5 (1.0): the
    output head reuses the input embedding and scales the decoder output by `d_model ** -0.5`.
    """

    d_model: int = 512
    num_heads: int = 8
    d_kv: int = 64
    d_ff: int = 1024
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    vocab_size: Optional[int] = 32128
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    # recompute each block's activations in the backward pass (memory for ~1/3 more compute);
    # not with dropout: the recomputation would draw new masks
    remat: bool = False
    name: Optional[str] = None  # the size name it came from, for messages and `model info`

    def __post_init__(self):
        self.validate()

    # -- checks -----------------------------------------------------------------------------

    def validate(self, source: str = "T5Config"):
        """Raise ConfigError naming the field when a value cannot be right."""
        positive = ["d_model", "num_heads", "d_kv", "d_ff", "num_encoder_layers",
                    "num_decoder_layers", "relative_attention_num_buckets",
                    "relative_attention_max_distance"]
        for field in positive:
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{source}: field '{field}' must be a positive integer, got {value!r}")
        if self.vocab_size is not None and (
            not isinstance(self.vocab_size, int) or isinstance(self.vocab_size, bool) or self.vocab_size <= 0
        ):
            raise ConfigError(
                f"{source}: field 'vocab_size' must be a positive integer or null, got {self.vocab_size!r}"
            )
        if self.feed_forward_proj not in FEED_FORWARD_PROJECTIONS:
            raise ConfigError(
                f"{source}: field 'feed_forward_proj' must be one of {list(FEED_FORWARD_PROJECTIONS)}, "
                f"got {self.feed_forward_proj!r}"
            )
        if not isinstance(self.remat, bool):
            raise ConfigError(f"{source}: field 'remat' must be true or false, got {self.remat!r}")
        if self.remat and self.dropout_rate:
            raise ConfigError(f"{source}: field 'remat' needs dropout_rate 0 (recomputing a block "
                              f"would draw new dropout masks), got {self.dropout_rate!r}")
        if not (isinstance(self.dropout_rate, (int, float)) and 0.0 <= self.dropout_rate < 1.0):
            raise ConfigError(f"{source}: field 'dropout_rate' must be in [0, 1), got {self.dropout_rate!r}")
        if not (isinstance(self.layer_norm_epsilon, (int, float)) and self.layer_norm_epsilon > 0):
            raise ConfigError(
                f"{source}: field 'layer_norm_epsilon' must be > 0, got {self.layer_norm_epsilon!r}"
            )
        if self.relative_attention_num_buckets < 4:
            raise ConfigError(f"{source}: field 'relative_attention_num_buckets' must be >= 4")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ConfigError(f"{source}: field 'tie_word_embeddings' must be true or false")

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj == "gated-gelu"

    @property
    def inner_dim(self) -> int:
        """Width of the attention projections (num_heads * d_kv; need not equal d_model)."""
        return self.num_heads * self.d_kv

    # -- vocabulary size --------------------------------------------------------------------

    def resolve_vocab_size(self, vocabulary) -> "T5Config":
        """Return a config whose `vocab_size` is set and fits `vocabulary` (or an int size).

        `vocab_size: null` becomes the vocabulary size rounded up to a multiple of 128. A set
        `vocab_size` smaller than the vocabulary is an error: ids past the last row would crash
        (or, on some devices, silently read garbage) at the embedding lookup.
        """
        size = vocabulary if isinstance(vocabulary, int) else int(vocabulary.vocab_size)
        if self.vocab_size is None:
            rows = -(-size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
            return dataclasses.replace(self, vocab_size=rows)
        if self.vocab_size < size:
            raise ConfigError(
                f"model config{' ' + repr(self.name) if self.name else ''} has vocab_size="
                f"{self.vocab_size} embedding rows but the vocabulary has {size} ids (including "
                f"sentinels); set vocab_size to null (derive it) or to at least {size}"
            )
        return self

    def require_vocab_size(self) -> int:
        if self.vocab_size is None:
            raise ConfigError(
                f"model config{' ' + repr(self.name) if self.name else ''} has vocab_size: null; "
                "call config.resolve_vocab_size(vocabulary) before building the model"
            )
        return self.vocab_size

    # -- (de)serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "model config") -> "T5Config":
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of model fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown field '{key}' (known fields: {', '.join(sorted(known))})"
                )
        config = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in values:
                setattr(config, f.name, values[f.name])
            else:
                setattr(config, f.name, f.default)
        config.validate(source)
        return config

    @classmethod
    def from_yaml(cls, path) -> "T5Config":
        import yaml

        path = pathlib.Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read model config {path}: {e.strerror or e}") from None
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        values = dict(values) if isinstance(values, dict) else values
        if isinstance(values, dict) and "name" not in values:
            values["name"] = path.stem
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_json(cls, path) -> "T5Config":
        path = pathlib.Path(path)
        try:
            values = json.loads(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read model config {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if isinstance(values, dict):
            values.pop("format_version", None)  # written by save_pretrained (t5pre.models.io)
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_name(cls, name: str) -> "T5Config":
        """The shipped size `name` (configs/model/NAME.yaml), e.g. "tiny", "small", "base"."""
        resource = _model_config_dir() / f"{name}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown model size {name!r}; known sizes: {', '.join(available_sizes())}"
            )
        with importlib.resources.as_file(resource) as path:
            return cls.from_yaml(path)

    @classmethod
    def from_name_or_path(cls, name_or_path: str) -> "T5Config":
        """A size name, a .yaml path or a model directory / model_config.json."""
        path = pathlib.Path(name_or_path)
        from t5pre.models.layout import MODEL_CONFIG_FILE

        if path.is_dir() and (path / MODEL_CONFIG_FILE).is_file():
            return cls.from_json(path / MODEL_CONFIG_FILE)
        if path.suffix == ".json" and path.is_file():
            return cls.from_json(path)
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise ConfigError(f"model config file not found: {path}")
            return cls.from_yaml(path)
        return cls.from_name(str(name_or_path))


def _model_config_dir():
    return importlib.resources.files("t5pre.configs") / "model"


def available_sizes() -> list[str]:
    """Names of the model configs shipped in configs/model/."""
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in _model_config_dir().iterdir()
        if entry.name.endswith(".yaml")
    )
