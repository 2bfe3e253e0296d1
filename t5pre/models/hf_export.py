"""Export a `T5Model` and its vocabulary as a Hugging Face T5 checkpoint directory.

    OUT/config.json            transformers' T5Config (T5.1.1: untied, "gated-gelu"; T5 1.0: tied)
    OUT/model.safetensors      the weights, float32, written with the `safetensors` library
    OUT/generation_config.json decoder_start_token_id 0, eos 1, pad 0
    OUT/spiece.model           t5pre's SentencePiece model (sentinels included, seqio's spelling)
    OUT/tokenizer.json         the same tokenizer for the `tokenizers` library (see below)
    OUT/tokenizer_config.json, OUT/special_tokens_map.json

so that, offline, `T5ForConditionalGeneration.from_pretrained(OUT)` gives t5pre's logits and
`AutoTokenizer.from_pretrained(OUT)` t5pre's token ids. The weight names come from the same table
as the import (`hf_convert._weight_plan`), so import and export cannot drift apart.

Why a hand-built tokenizer.json rather than `T5Tokenizer(spiece.model)`: transformers 5's
`T5Tokenizer` builds its Unigram model without byte fallback (characters outside the pieces become
<unk>, where SentencePiece spells them in bytes) and ignores the model's own normaliser flags, so
the ids would differ from t5pre's on such text. Here the normaliser follows the SentencePiece
model's spec (its precompiled NFKC map, whitespace stripping and collapsing, the "▁" dummy prefix),
byte fallback is kept, and the sentinels are what Hugging Face's T5 makes them: special added
tokens `<extra_id_i>` at ids `vocab_size - 1 - i`, split off the text before normalisation, so the
text between two sentinels is encoded on its own ("a <extra_id_0> b" -> "▁a", "<extra_id_0>",
"▁b", no stray "▁"; the rule of `t5pre.data.vocabulary`). The decoder writes a sentinel as
" <extra_id_i>" (a space before it unless it starts the text), as t5pre, seqio and SentencePiece
decode it; `skip_special_tokens=True` drops sentinels, like Hugging Face's T5. The ids then equal
`vocabulary.encode(text) + [EOS]` and the decoded strings `vocabulary.decode(ids)`
(tests/test_hf_export.py, tests/test_sentinels.py check it on text with sentinels glued to words
or between spaces, multiple spaces, unknown characters and byte-fallback characters).
`spiece.model` is the model t5pre's tokenizers load: seqio's, sentinels spelt `▁<extra_id_i>`
(`extra_ids` 0 in tokenizer_config.json: they are already in it). One known difference: the
literal text "</s>", "<pad>" or "<unk>" becomes that special token in HF, characters in t5pre.

A T5.1.1 export (untied output head) logs one warning in transformers >= 5 when it is loaded:
"The tied weights mapping and config for this model specifies to tie shared.weight to
lm_head.weight, but both are present in the checkpoints with different values, so we will NOT
tie them. You should update the config with `tie_word_embeddings=False`". config.json already
says false: transformers 5's T5Config reads that key as "do not scale the decoder output" and
then sets `tie_word_embeddings` to true for every T5 (T5ForConditionalGeneration always ties
`lm_head` to `shared` when it builds the model), so every untied T5 checkpoint, Google's
t5-v1_1 and flan-t5 included, gets the warning, and nothing in config.json can silence it. The
head is loaded untied, as exported (the logits equal t5pre's; tests/test_hf_export.py checks
both, and that a T5 1.0 export loads without the warning). To hide it:
`transformers.logging.set_verbosity_error()` before loading.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np

from t5pre.errors import CheckpointError
from t5pre.files import atomic_directory, check_target
from t5pre.models.hf_convert import _weight_plan, ours_to_hf
from t5pre.optional import require

PURPOSE = "exporting to Hugging Face format (`t5pre export --format hf`)"
MODEL_FILE = "model.safetensors"
HF_MODEL_MAX_LENGTH = 512  # the tokenizer's model_max_length when the directory records none (T5's)


def hf_config(config) -> dict:
    """transformers' `config.json` for a t5pre `T5Config`."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "vocab_size": config.require_vocab_size(),
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "feed_forward_proj": config.feed_forward_proj,
        # false also tells transformers >= 5 not to scale the decoder output (T5.1.1)
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "use_cache": True,
    }


def hf_state_dict(model) -> dict[str, np.ndarray]:
    """HF T5 tensor name -> float32 array for every weight of `model`."""
    tensors = {}
    for variable, names, kind in _weight_plan(model.config, model):
        value = np.asarray(keras_value(variable), dtype=np.float32)
        for name, part in zip(names, ours_to_hf(kind, value, len(names))):
            tensors[name] = part
    return tensors


def keras_value(variable):
    import keras

    return keras.ops.convert_to_numpy(variable.value)


# --------------------------------------------------------------------------------- tokenizer
def hf_tokenizer(vocabulary):
    """A `tokenizers.Tokenizer` that encodes like `vocabulary` (+ EOS) and decodes like it
    (see the module docstring). Returns (tokenizer, [pad, eos, unk] pieces, sentinel pieces)."""
    tokenizers = require("tokenizers", PURPOSE)
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    from t5pre.data.vocabulary import _model_proto_module, extra_id_piece

    proto = _model_proto_module().ModelProto()
    proto.ParseFromString(vocabulary.serialized_model)  # sentinels spelt <extra_id_i>
    if proto.trainer_spec.model_type != proto.trainer_spec.UNIGRAM:
        raise CheckpointError(
            "exporting the tokenizer needs a unigram SentencePiece model (t5pre's default); this "
            f"one is of type {proto.trainer_spec.model_type}")
    spec = proto.normalizer_spec
    tokenizer = tokenizers.Tokenizer(Unigram(
        [(p.piece, p.score) for p in proto.pieces], unk_id=vocabulary.unk_id,
        byte_fallback=bool(proto.trainer_spec.byte_fallback)))
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:  # SentencePiece strips and collapses spaces only
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:  # in the normaliser: a pre-tokenizer would miss it after a strip
        steps.append(normalizers.Prepend("▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    sentinels = [extra_id_piece(i) for i in range(vocabulary.extra_ids)]
    user_defined = [p.piece for p in proto.pieces[: vocabulary.num_base_pieces]
                    if p.type == p.USER_DEFINED]
    if user_defined:  # any user-defined piece of the base model is emitted whole
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    # a sentinel decodes as SentencePiece decodes seqio's piece "▁<extra_id_i>"
    tail = [decoders.Replace("<extra_id_", "▁<extra_id_")] if sentinels else []
    tail.append(decoders.Replace("▁", " "))
    if proto.trainer_spec.byte_fallback:
        tail.append(decoders.ByteFallback())
    tail.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        tail.append(decoders.Strip(content=" ", left=1))
    tokenizer.decoder = decoders.Sequence(tail)
    specials = [proto.pieces[i].piece for i in (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id)]
    tokenizer.add_special_tokens(specials)
    # Hugging Face's T5: sentinels are special tokens matched in the raw text (before the
    # normaliser), so the text on each side is encoded as a sentence of its own.
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=False,
                                             rstrip=False, single_word=False) for s in sentinels])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", specials[1]], pair=["$A", specials[1], "$B", specials[1]],
        special_tokens=[(specials[1], vocabulary.eos_id)])
    return tokenizer, specials, sentinels


def _write_tokenizer(vocabulary, directory: pathlib.Path, max_length: int):
    tokenizer, (pad, eos, unk), sentinels = hf_tokenizer(vocabulary)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "spiece.model").write_bytes(vocabulary.tokenizer_model)
    special = {"pad_token": pad, "eos_token": eos, "unk_token": unk}
    if sentinels:
        special["additional_special_tokens"] = sentinels
    _write_json(directory / "special_tokens_map.json", special)
    _write_json(directory / "tokenizer_config.json", {
        # the generic fast tokenizer loads tokenizer.json as written; T5Tokenizer would rebuild
        # the pipeline its own way (without byte fallback)
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "extra_ids": 0,  # the sentinels are already in spiece.model / tokenizer.json
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    })


def _write_json(path: pathlib.Path, values: dict):
    path.write_text(json.dumps(values, indent=2) + "\n")


# ------------------------------------------------------------------------------------ export
def export_hf(model, vocabulary, out_dir, *, overwrite: bool = False,
              max_length: int = HF_MODEL_MAX_LENGTH,
              metadata: dict | None = None) -> pathlib.Path:
    """Write `model` (+ `vocabulary`, or None for weights only) to `out_dir` in HF layout.

    Assembled in a sibling directory and renamed into place (`t5pre.files.atomic_directory`), so
    a crash leaves no half-written export; an existing `out_dir` is refused unless `overwrite`.
    `max_length` is the tokenizer's `model_max_length`; `metadata` (e.g. where the model came from) is stored in the
    safetensors header.
    """
    safetensors_numpy = require("safetensors.numpy", PURPOSE)
    out = pathlib.Path(out_dir)
    check_target(out, overwrite)
    if vocabulary is not None and vocabulary.vocab_size > model.config.require_vocab_size():
        raise CheckpointError(
            f"cannot export: the vocabulary has {vocabulary.vocab_size} ids but the model's "
            f"embedding has {model.config.vocab_size} rows")
    with atomic_directory(out, replace=True,  # check_target refuses it first
                          # again: another process may have created it meanwhile
                          before_rename=lambda: check_target(out, overwrite)) as staging:
        _write_json(staging / "config.json", hf_config(model.config))
        _write_json(staging / "generation_config.json",
                    {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0})
        header = {"format": "pt", **{k: json.dumps(v) if not isinstance(v, str) else v
                                     for k, v in (metadata or {}).items()}}
        safetensors_numpy.save_file(hf_state_dict(model), str(staging / MODEL_FILE), metadata=header)
        if vocabulary is not None:
            _write_tokenizer(vocabulary, staging, max_length)
    return out


def export_model_dir(model_dir, out_dir, checkpoint=None, *, overwrite: bool = False):
    """Export a t5pre model directory (a training directory, latest or `checkpoint`; a
    `save_pretrained` directory; a fine-tuning `best/`) to `out_dir`. Returns (out, loaded)."""
    from t5pre.models.store import load_for_inference

    require("safetensors", PURPOSE)  # fail fast, before loading anything
    require("tokenizers", PURPOSE)
    check_target(out_dir, overwrite)
    loaded = load_for_inference(model_dir, checkpoint)  # the one call that reads a model dir
    lengths = loaded.sequence_length or {}
    max_length = int(lengths.get("inputs") or HF_MODEL_MAX_LENGTH)
    source = {"model_dir": os.path.abspath(loaded.model_dir), "layout": loaded.layout,
              "checkpoint": loaded.checkpoint or ""}
    out = export_hf(loaded.model, loaded.vocabulary, out_dir, overwrite=overwrite,
                    max_length=max_length, metadata={"t5pre_source": source})
    return out, loaded
