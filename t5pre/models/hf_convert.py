"""Convert a Hugging Face T5 checkpoint directory (T5 1.0, T5.1.1, Flan-T5, mT5) to a `T5Model`.

Reads `config.json`, the weights (`model.safetensors`, a sharded `model.safetensors.index.json`,
or `pytorch_model.bin`, the last one needing torch) and `spiece.model` when present. Safetensors
are read with the `safetensors` library, tensor by tensor (no torch needed; bf16/fp16 weights
become float32 as each is assigned). The export direction is `t5pre.models.hf_export`.

The output head, which is where T5 variants differ:
* T5 1.0 (`tie_word_embeddings` true or absent in config.json, no separate `lm_head.weight`):
  tied head, decoder output scaled by d_model ** -0.5 -> our `tie_word_embeddings: true`.
* T5.1.1 / Flan-T5 / mT5 (`tie_word_embeddings: false`, a separate `lm_head.weight`): untied.
* transformers >= 5 always ties the head in memory and records the scaling as
  `scale_decoder_outputs`; a checkpoint saved that way with `scale_decoder_outputs: false` has
  no `lm_head.weight` yet must not be scaled: we copy the embedding into an untied head.
"""

from __future__ import annotations

import json
import pathlib
import struct

import numpy as np

from t5pre.errors import CheckpointError, ConfigError
from t5pre.models.config import T5Config
from t5pre.optional import require

# Tensors some checkpoints carry that T5 never uses (HF ignores them too).
_IGNORED = {
    "encoder.embed_tokens.weight",  # copies of shared.weight
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
}

class _Tensors:
    """Name -> numpy array, read from the checkpoint one tensor at a time when asked for.

    safetensors files are opened with the `safetensors` library (`framework="numpy"`; bf16 comes
    back as ml_dtypes' bfloat16, which Keras and TensorFlow already install): only the tensors
    of the variable being assigned are read and widened to float32, never a copy of the whole
    file. (Measured on a 60M-parameter bf16 checkpoint, the process's peak RSS is the same as
    with the old whole-file reader, 1.37 GB: building the model dominates at that size.)
    """

    def __init__(self, files: dict, loaded: dict | None = None):
        self._files = files  # name -> (safetensors path, name stored there)
        self._loaded = loaded or {}  # name -> array (pytorch_model.bin, read whole)

    def names(self) -> set[str]:
        return set(self._files) | set(self._loaded)

    def __contains__(self, name):
        return name in self._files or name in self._loaded

    def get(self, name: str) -> np.ndarray:
        if name in self._loaded:
            return self._loaded[name]
        path, stored = self._files[name]
        try:
            with _safe_open(path) as f:
                return f.get_tensor(stored)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read tensor {name} ({e})") from None

    def alias(self, name: str, source: str):
        """Make `name` read the same tensor as `source` (a tied head copied into an untied one)."""
        if source in self._loaded:
            self._loaded[name] = self._loaded[source]
        else:
            self._files[name] = self._files[source]


def _safe_open(path):
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for safetensors' numpy reader)

    safetensors = require("safetensors", "reading a Hugging Face checkpoint")
    try:
        return safetensors.safe_open(str(path), framework="numpy")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as e:  # SafetensorError: a bad header, or a file cut short
        message = str(e)
        if "not fully covered" in message:
            cut = _tensors_past_the_end(pathlib.Path(path))
            message = "the file is truncated" + (
                f" (tensor {', '.join(cut[:4])} runs past the end)" if cut else f" ({message})")
        raise CheckpointError(f"{path}: not a readable safetensors file: {message}") from None


def _tensors_past_the_end(path: pathlib.Path) -> list[str]:
    """Names of the tensors a cut-short safetensors file lacks (read from its JSON header),
    for the error message only; [] when even the header is unreadable."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        available = path.stat().st_size - 8 - length
        return sorted(name for name, info in header.items()
                      if name != "__metadata__" and info["data_offsets"][1] > available)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return []


def _safetensors_names(path) -> dict:
    with _safe_open(path) as f:
        return {name: (pathlib.Path(path), name) for name in f.keys()}


def read_safetensors(path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as float32 numpy arrays (bf16/fp16 widened exactly)."""
    with _safe_open(path) as f:
        return {name: f.get_tensor(name).astype(np.float32) for name in f.keys()}


def _read_weights(directory: pathlib.Path) -> _Tensors:
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return _Tensors(_safetensors_names(single))
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = {}
        for shard in shards:
            if not (directory / shard).is_file():
                raise CheckpointError(f"{index} lists shard {shard}, which is missing")
            files.update(_safetensors_names(directory / shard))
        return _Tensors(files)
    torch_file = directory / "pytorch_model.bin"
    if torch_file.is_file():
        torch = require("torch", f"reading {torch_file} (or convert it to safetensors)")
        try:
            state = torch.load(torch_file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{torch_file}: cannot read ({e})") from None
        return _Tensors({}, {k: v.float().numpy() for k, v in state.items()})
    raise CheckpointError(
        f"{directory}: no weights found (expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin)"
    )


def config_from_hf(hf: dict, source: str = "config.json") -> tuple[T5Config, bool]:
    """(T5Config, scale_decoder_outputs) from an HF T5 config dict."""
    model_type = hf.get("model_type", "t5")
    if model_type not in ("t5", "mt5"):
        raise ConfigError(f"{source}: model_type {model_type!r} is not T5 (expected 't5' or 'mt5')")
    projection = hf.get("feed_forward_proj", "relu")
    if projection not in ("relu", "gated-gelu"):
        raise ConfigError(
            f"{source}: feed_forward_proj {projection!r} is not supported (only 'relu' and 'gated-gelu')"
        )
    tie = hf.get("tie_word_embeddings", True)
    scale = hf.get("scale_decoder_outputs", tie)
    try:
        config = T5Config(
            d_model=hf["d_model"],
            num_heads=hf["num_heads"],
            d_kv=hf["d_kv"],
            d_ff=hf["d_ff"],
            num_encoder_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            vocab_size=hf["vocab_size"],
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            dropout_rate=float(hf.get("dropout_rate", 0.1)),
            layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
            feed_forward_proj=projection,
            tie_word_embeddings=bool(scale),
            name=hf.get("_name_or_path") or None,
        )
    except KeyError as e:
        raise ConfigError(f"{source}: required field {e.args[0]!r} is missing") from None
    return config, bool(scale)


def _weight_plan(config: T5Config, model):
    """(variable, [hf names], kind) for every variable of `model`, the head included.

    kind "same": the HF tensor is our variable. kind "linear": HF Linear weights are [out, in],
    ours [in, out], several HF tensors fused on our out axis (q|k|v, k|v, wi_0|wi_1) in equal
    parts. `hf_to_ours` / `ours_to_hf` turn one side into the other, so import and export
    (t5pre.models.hf_export) share this one table.
    """
    plan = []

    def add(variable, kind, *names):
        plan.append((variable, list(names), kind))

    add(model.token_embedding.embeddings, "same", "shared.weight")
    add(model.encoder_position_bias.embeddings, "same",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    add(model.decoder_position_bias.embeddings, "same",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    for stack, blocks in (("encoder", model.encoder_blocks), ("decoder", model.decoder_blocks)):
        for i, block in enumerate(blocks):
            p = f"{stack}.block.{i}.layer"
            ff = 1 if stack == "encoder" else 2
            attn = f"{p}.0.SelfAttention"
            add(block.attention_norm.scale, "same", f"{p}.0.layer_norm.weight")
            add(block.attention.qkv_kernel, "linear", f"{attn}.q.weight", f"{attn}.k.weight", f"{attn}.v.weight")
            add(block.attention.output_kernel, "linear", f"{attn}.o.weight")
            if stack == "decoder":
                cross = f"{p}.1.EncDecAttention"
                add(block.cross_attention_norm.scale, "same", f"{p}.1.layer_norm.weight")
                add(block.cross_attention.query_kernel, "linear", f"{cross}.q.weight")
                add(block.cross_attention.key_value_kernel, "linear", f"{cross}.k.weight", f"{cross}.v.weight")
                add(block.cross_attention.output_kernel, "linear", f"{cross}.o.weight")
            dense = f"{p}.{ff}.DenseReluDense"
            add(block.feed_forward_norm.scale, "same", f"{p}.{ff}.layer_norm.weight")
            if config.is_gated:
                add(block.feed_forward.input_kernel, "linear", f"{dense}.wi_0.weight", f"{dense}.wi_1.weight")
            else:
                add(block.feed_forward.input_kernel, "linear", f"{dense}.wi.weight")
            add(block.feed_forward.output_kernel, "linear", f"{dense}.wo.weight")
        final = model.encoder_final_norm if stack == "encoder" else model.decoder_final_norm
        add(final.scale, "same", f"{stack}.final_layer_norm.weight")
    if not config.tie_word_embeddings:
        add(model.lm_head.kernel, "linear", "lm_head.weight")
    return plan


def hf_to_ours(kind: str, arrays):
    """Our variable's value from its HF tensors (see `_weight_plan`)."""
    if kind == "same":
        return arrays[0]
    return np.concatenate([a.T for a in arrays], axis=1)


def ours_to_hf(kind: str, value, count: int):
    """The `count` HF tensors of one of our variables (the inverse of `hf_to_ours`)."""
    if kind == "same":
        return [value]
    return [np.ascontiguousarray(part.T) for part in np.split(value, count, axis=1)]


def from_hf(path, dtype=None, extra_ids=None):
    """Load an HF T5 checkpoint directory -> `(T5Model, SentencePieceVocabulary or None)`.

    `extra_ids` (sentinels added to spiece.model) defaults to tokenizer_config.json's
    `extra_ids`, else 100 (T5's). Raises CheckpointError naming missing/unexpected tensors, shape
    mismatches and a vocabulary larger than the embedding.
    """
    from t5pre.models.t5 import T5Model

    directory = pathlib.Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"Hugging Face checkpoint directory not found: {directory}")
    config_path = directory / "config.json"
    try:
        hf_config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: config.json is missing") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_path}: cannot read ({e})") from None
    config, scaled = config_from_hf(hf_config, str(config_path))
    tensors = _read_weights(directory)

    has_head = "lm_head.weight" in tensors
    has_shared = "shared.weight" in tensors
    if has_head and has_shared and np.array_equal(tensors.get("lm_head.weight"),
                                                  tensors.get("shared.weight")):
        has_head = not scaled  # a stored copy of a tied head
    if has_head or not scaled:
        config.tie_word_embeddings = False  # untied (or tied-unscaled: copy the embedding)
        if not has_head and has_shared:
            tensors.alias("lm_head.weight", "shared.weight")
    else:
        config.tie_word_embeddings = True

    vocabulary = _read_vocabulary(directory, config, extra_ids)
    model = T5Model(config, **({"dtype": dtype} if dtype else {}))
    plan = _weight_plan(config, model)

    needed = {name for _, names, _ in plan for name in names}
    missing = sorted(needed - tensors.names())
    unexpected = sorted(tensors.names() - needed - _IGNORED - {"lm_head.weight"})
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors ({len(missing)}): {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append(f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected[:8])}"
                         + (" ..." if len(unexpected) > 8 else ""))
        raise CheckpointError(f"{directory}: weights do not match config.json: " + "; ".join(parts))
    for variable, names, kind in plan:
        value = hf_to_ours(kind, [tensors.get(n).astype(np.float32) for n in names])
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{directory}: {' + '.join(names)} gives shape {tuple(value.shape)} but the model "
                f"expects {tuple(variable.shape)} for {variable.path}"
            )
        variable.assign(value)
    return model, vocabulary


def _read_vocabulary(directory: pathlib.Path, config: T5Config, extra_ids):
    spm_path = directory / "spiece.model"
    if not spm_path.is_file():
        return None
    from t5pre.data.vocabulary import SentencePieceVocabulary
    from t5pre.errors import T5preError

    if extra_ids is None:
        # A t5pre export keeps its sentinels inside spiece.model, spelt "▁<extra_id_i>" as seqio
        # does (tokenizer_config says 0 then); HF's T5 adds tokenizer_config.json's extra_ids
        # (default 100) on top of the pieces. Text with sentinels then encodes as HF's T5
        # tokenizer encodes it either way (t5pre.data.vocabulary).
        extra_ids = _sentinels_in(spm_path)
        if not extra_ids:
            extra_ids = 100
            tokenizer_config = directory / "tokenizer_config.json"
            if tokenizer_config.is_file():
                try:
                    extra_ids = int(json.loads(tokenizer_config.read_text()).get("extra_ids", 100))
                except (OSError, ValueError, TypeError):
                    pass
    try:
        vocabulary = SentencePieceVocabulary(str(spm_path), extra_ids=extra_ids)
    except T5preError as e:
        raise CheckpointError(f"{spm_path}: cannot load the vocabulary: {e}") from None
    if vocabulary.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{directory}: vocabulary size mismatch: spiece.model with {extra_ids} extra ids has "
            f"{vocabulary.vocab_size} ids but config.json vocab_size is {config.vocab_size} "
            "embedding rows"
        )
    return vocabulary


def _sentinels_in(spm_path: pathlib.Path) -> int:
    """How many sentinel pieces (spelt "<extra_id_i>" or seqio's "▁<extra_id_i>") the
    SentencePiece model itself holds (0 for HF's T5)."""
    from t5pre.data.vocabulary import SentencePieceVocabulary, _parse_model
    from t5pre.errors import T5preError

    try:
        proto = _parse_model(spm_path.read_bytes(), str(spm_path))
        return SentencePieceVocabulary._existing_sentinels(proto, str(spm_path))
    except (OSError, T5preError):
        return 0  # SentencePieceVocabulary below reports what is wrong with the file


def convert_hf(path, out_dir, extra_ids=None):
    """`from_hf(path)` then `save_pretrained(..., out_dir)`; returns (out_dir, model, vocabulary)."""
    from t5pre.models.io import save_pretrained

    model, vocabulary = from_hf(path, extra_ids=extra_ids)
    return save_pretrained(model, vocabulary, out_dir), model, vocabulary
