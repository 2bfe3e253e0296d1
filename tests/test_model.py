"""T5Config and T5Model: configs, shapes, masks, packing, causality, precision, serialisation."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from t5pre.errors import ConfigError
from t5pre.models.config import T5Config, available_sizes

MICRO = dict(d_model=32, num_heads=2, d_kv=8, d_ff=48, num_encoder_layers=2,
             num_decoder_layers=2, vocab_size=64, relative_attention_num_buckets=8,
             relative_attention_max_distance=16)


def micro_model(**overrides):
    import keras

    from t5pre.models.t5 import T5Model

    keras.utils.set_random_seed(0)
    return T5Model(T5Config(**{**MICRO, **overrides}))


def features(batch=2, inputs=7, targets=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "encoder_token_ids": rng.integers(3, 60, (batch, inputs)).astype("int32"),
        "encoder_padding_mask": np.ones((batch, inputs), "int32"),
        "decoder_token_ids": rng.integers(3, 60, (batch, targets)).astype("int32"),
        "decoder_padding_mask": np.ones((batch, targets), "int32"),
    }


def run(model, feats):
    return np.asarray(model(feats))


# -- config -------------------------------------------------------------------------------------


def test_shipped_sizes_load_with_published_dimensions():
    sizes = available_sizes()
    for name in ["tiny", "small", "base", "large", "xl", "t5_1_0_small"]:
        assert name in sizes
        assert T5Config.from_name(name).name == name
    small = T5Config.from_name("small")
    assert (small.d_model, small.num_heads, small.d_ff, small.num_encoder_layers,
            small.vocab_size, small.feed_forward_proj, small.tie_word_embeddings) == (
        512, 6, 1024, 8, 32128, "gated-gelu", False)
    base = T5Config.from_name("base")
    assert (base.d_model, base.num_heads, base.d_ff, base.num_decoder_layers) == (768, 12, 2048, 12)
    old = T5Config.from_name("t5_1_0_small")
    assert old.feed_forward_proj == "relu" and old.tie_word_embeddings


def test_tiny_vocab_size_is_derived_from_the_vocabulary():
    tiny = T5Config.from_name("tiny")
    assert tiny.vocab_size is None
    assert tiny.resolve_vocab_size(4100).vocab_size == 4224
    assert tiny.resolve_vocab_size(4224).vocab_size == 4224
    with pytest.raises(ConfigError, match="null"):
        tiny.require_vocab_size()


def test_vocabulary_larger_than_embedding_is_refused():
    with pytest.raises(ConfigError, match="32128.*32200"):
        T5Config.from_name("small").resolve_vocab_size(32200)
    assert T5Config.from_name("small").resolve_vocab_size(32100).vocab_size == 32128


def test_unknown_size_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        T5Config.from_name("huge")
    assert "huge" in str(e.value) and "tiny" in str(e.value) and "base" in str(e.value)


def test_bad_yaml_fields_are_named(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("d_model: 64\nnum_hedas: 4\n")
    with pytest.raises(ConfigError, match=r"m\.yaml.*num_hedas"):
        T5Config.from_yaml(path)
    path.write_text("d_model: 64\nfeed_forward_proj: swish\n")
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        T5Config.from_yaml(path)
    path.write_text("d_model: -3\n")
    with pytest.raises(ConfigError, match="d_model"):
        T5Config.from_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        T5Config.from_name_or_path(str(tmp_path / "missing.yaml"))


# -- model --------------------------------------------------------------------------------------


def test_output_shape_dtype_and_weights_exist_before_any_call():
    model = micro_model()
    assert model.built and len(model.trainable_weights) > 0
    out = run(model, features(batch=3, inputs=7, targets=5))
    assert out.shape == (3, 5, 64) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_padded_tokens_do_not_change_outputs():
    model = micro_model()
    f = features()
    f["encoder_padding_mask"][:, 5:] = 0
    f["decoder_padding_mask"][:, 4:] = 0
    base = run(model, f)
    g = {k: v.copy() for k, v in f.items()}
    g["encoder_token_ids"][:, 5:] = [11, 12]
    g["decoder_token_ids"][:, 4:] = 13
    changed = run(model, g)
    np.testing.assert_allclose(changed[:, :4], base[:, :4], atol=1e-5)
    # sanity: a real encoder token does change them
    g["encoder_token_ids"][:, 0] += 1
    assert np.abs(run(model, g)[:, :4] - base[:, :4]).max() > 1e-4


def test_decoder_is_causal():
    model = micro_model()
    f = features(targets=6)
    base = run(model, f)
    g = {k: v.copy() for k, v in f.items()}
    g["decoder_token_ids"][:, 3] += 1
    changed = run(model, g)
    np.testing.assert_allclose(changed[:, :3], base[:, :3], atol=1e-5)
    assert np.abs(changed[:, 3:] - base[:, 3:]).max() > 1e-4


def _packed_pair():
    """Two examples packed in one row, and each alone (unpacked, padded)."""
    rng = np.random.default_rng(3)
    a_in, b_in = rng.integers(3, 60, 4), rng.integers(3, 60, 3)
    a_dec, b_dec = rng.integers(3, 60, 3), rng.integers(3, 60, 2)
    n, m = 9, 6

    def pad(x, length):
        return np.pad(x, (0, length - len(x))).astype("int32")

    packed = {
        "encoder_token_ids": pad(np.concatenate([a_in, b_in]), n)[None],
        "encoder_padding_mask": pad(np.ones(7), n)[None],
        "encoder_segment_ids": pad(np.array([1] * 4 + [2] * 3), n)[None],
        "encoder_positions": pad(np.array([0, 1, 2, 3, 0, 1, 2]), n)[None],
        "decoder_token_ids": pad(np.concatenate([a_dec, b_dec]), m)[None],
        "decoder_padding_mask": pad(np.ones(5), m)[None],
        "decoder_segment_ids": pad(np.array([1] * 3 + [2] * 2), m)[None],
        "decoder_positions": pad(np.array([0, 1, 2, 0, 1]), m)[None],
    }

    def alone(inp, dec):
        return {
            "encoder_token_ids": pad(inp, n)[None],
            "encoder_padding_mask": pad(np.ones(len(inp)), n)[None],
            "decoder_token_ids": pad(dec, m)[None],
            "decoder_padding_mask": pad(np.ones(len(dec)), m)[None],
        }

    return packed, alone(a_in, a_dec), alone(b_in, b_dec)


def test_packed_examples_match_the_same_examples_alone():
    model = micro_model()
    packed, a, b = _packed_pair()
    out = run(model, packed)[0]
    np.testing.assert_allclose(out[:3], run(model, a)[0, :3], atol=1e-4)
    np.testing.assert_allclose(out[3:5], run(model, b)[0, :2], atol=1e-4)


def test_other_segment_does_not_leak():
    model = micro_model()
    packed, _, _ = _packed_pair()
    base = run(model, packed)[0]
    g = {k: v.copy() for k, v in packed.items()}
    g["encoder_token_ids"][0, 1] += 1  # segment 1 input
    g["decoder_token_ids"][0, 2] += 1  # segment 1 last decoder token
    changed = run(model, g)[0]
    np.testing.assert_allclose(changed[3:5], base[3:5], atol=1e-5)
    assert np.abs(changed[:3] - base[:3]).max() > 1e-4


def test_mixed_precision_gives_float32_logits_close_to_float32():
    import keras

    f = features()
    reference_model = micro_model()
    reference = run(reference_model, f)
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = micro_model()
        model.set_weights(reference_model.get_weights())
        assert model.token_embedding.embeddings.dtype == "float32"
        out = model(f)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        assert np.abs(np.asarray(out) - reference).max() < 0.25 * np.abs(reference).max()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_t5_1_0_variant_ties_the_head():
    untied, tied = micro_model(), micro_model(feed_forward_proj="relu", tie_word_embeddings=True)
    assert tied.lm_head is None and untied.lm_head is not None
    assert untied.count_params() - tied.count_params() == 32 * 64 + 4 * 32 * 48  # head + 2nd input kernel x 4 layers
    assert run(tied, features()).shape == (2, 5, 64)


def test_get_config_round_trip_and_gradients():
    import tensorflow as tf

    from t5pre.models.losses import seq2seq_loss
    from t5pre.models.t5 import T5Model

    model = micro_model(dropout_rate=0.1)
    clone = T5Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    f = features()
    np.testing.assert_allclose(run(clone, f), run(model, f), atol=1e-6)
    targets = np.roll(f["decoder_token_ids"], -1, axis=1)
    with tf.GradientTape() as tape:
        logits = model(f, training=True)
        loss, _ = seq2seq_loss(targets, logits, np.ones(targets.shape, "float32"), z_loss=1e-4)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    # dropout is active with training=True and off otherwise
    assert np.abs(np.asarray(model(f, training=True)) - run(model, f)).max() > 1e-4


@pytest.mark.slow
def test_same_code_runs_on_the_jax_backend():
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("jax is not installed here; the model uses keras.ops only")
    code = textwrap.dedent(
        """
        import numpy as np, keras
        assert keras.backend.backend() == "jax"
        from t5pre.models.config import T5Config
        from t5pre.models.t5 import T5Model
        m = T5Model(T5Config(d_model=32, num_heads=2, d_kv=8, d_ff=48, num_encoder_layers=1,
                             num_decoder_layers=1, vocab_size=64))
        ids = np.ones((2, 5), "int32")
        out = m({"encoder_token_ids": ids, "encoder_padding_mask": ids,
                 "decoder_token_ids": ids, "decoder_padding_mask": ids})
        assert out.shape == (2, 5, 64)
        print("ok")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# -- save / load --------------------------------------------------------------------------------


def tiny_vocabulary(extra_ids=4):
    """A real SentencePiece vocabulary trained in memory in ~20 ms (about 50 ids)."""
    import io
    import random

    import sentencepiece as spm

    from t5pre.data.vocabulary import SentencePieceVocabulary

    words = ("the quick brown fox jumps over the lazy dog while a cat sleeps on the warm mat "
             "and birds sing").split()
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(300)]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=60, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, model_type="unigram", hard_vocab_limit=False,
        minloglevel=2,
    )
    return SentencePieceVocabulary(buffer.getvalue(), extra_ids=extra_ids)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    from t5pre.models.io import load_pretrained, save_pretrained

    model, vocab = micro_model(), tiny_vocabulary()
    assert vocab.vocab_size <= 64
    out_dir = save_pretrained(model, vocab, tmp_path / "saved")
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "model.weights.h5", "model_config.json", "spiece.model", "vocab.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no staging left
    loaded, loaded_vocab = load_pretrained(out_dir)
    assert loaded.config == model.config
    assert loaded_vocab.vocab_size == vocab.vocab_size
    assert loaded_vocab.encode("the lazy cat") == vocab.encode("the lazy cat")
    f = features()
    np.testing.assert_array_equal(run(loaded, f), run(model, f))
    # saving into an existing directory keeps unrelated files (e.g. a training run's checkpoints)
    (out_dir / "checkpoints").mkdir()
    save_pretrained(micro_model(), None, out_dir)
    assert (out_dir / "checkpoints").is_dir() and (out_dir / "spiece.model").is_file()


def test_bad_checkpoints_give_clear_errors(tmp_path):
    from t5pre.errors import CheckpointError
    from t5pre.models.io import load_pretrained, save_pretrained

    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model_config.json is missing"):
        load_pretrained(tmp_path / "empty")

    saved = save_pretrained(micro_model(), tiny_vocabulary(), tmp_path / "ok")
    weights = saved / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # partial write
    with pytest.raises(CheckpointError, match="model.weights.h5"):
        load_pretrained(saved)
    weights.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(CheckpointError, match="model.weights.h5"):
        load_pretrained(saved)
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.weights.h5 is missing"):
        load_pretrained(saved)

    # weights of a different config
    other = save_pretrained(micro_model(d_ff=40), None, tmp_path / "other")
    (saved / "model.weights.h5").write_bytes((other / "model.weights.h5").read_bytes())
    with pytest.raises(CheckpointError, match="model.weights.h5"):
        load_pretrained(saved)

    # a vocabulary larger than the embedding
    small = save_pretrained(micro_model(vocab_size=16), None, tmp_path / "small")
    tiny_vocabulary().save(str(small))
    with pytest.raises(CheckpointError, match="embedding"):
        load_pretrained(small)
    with pytest.raises(CheckpointError, match="embedding"):
        save_pretrained(micro_model(vocab_size=16), tiny_vocabulary(), tmp_path / "small2")


# -- model info -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"feed_forward_proj": "relu", "tie_word_embeddings": True}])
def test_parameter_counts_match_the_built_model(overrides):
    from t5pre.models.info import parameter_counts, training_flops

    model = micro_model(**overrides)
    counts = parameter_counts(model.config)
    assert counts["total"] == model.count_params()
    assert counts["embedding"] == 64 * 32 and counts["head"] == (0 if overrides else 64 * 32)
    # dense FLOPs = 6 x (weight-matrix parameters, head included) per token when N == M
    matrices = sum(int(np.prod(w.shape)) for w in model.trainable_weights
                   if len(w.shape) == 2 and "embedding" not in w.path and "position_bias" not in w.path)
    if model.lm_head is None:
        matrices += 64 * 32
    flops = training_flops(model.config, 10, 10)
    attention = flops["attention_share"] * flops["forward_per_example"] * 3
    assert flops["training_per_example"] - attention == pytest.approx(6 * matrices * 10)


def test_published_parameter_counts():
    from t5pre.models.info import parameter_counts

    # the numbers Hugging Face reports for google/t5-v1_1-small and t5-small
    assert parameter_counts(T5Config.from_name("small"))["total"] == 76_961_152
    assert parameter_counts(T5Config.from_name("t5_1_0_small"))["total"] == 60_506_624


def test_model_info_cli(tmp_path, capsys):
    from t5pre.cli import main
    from t5pre.models.io import save_pretrained

    assert main(["model", "info", "small", "--inputs-length", "512", "--targets-length", "114"]) == 0
    out = capsys.readouterr().out
    assert "76,961,152" in out and "per token" in out
    assert main(["model", "info", "tiny", "--vocab-size", "4100"]) == 0
    assert "4224 embedding rows" in capsys.readouterr().out
    saved = save_pretrained(micro_model(), None, tmp_path / "m")
    assert main(["model", "info", str(saved)]) == 0
    assert f"{micro_model().count_params():,}" in capsys.readouterr().out
    assert main(["model", "info", "gigantic"]) == 2
    assert "known sizes" in capsys.readouterr().err


def test_memory_per_device_estimate():
    from t5pre.models.info import parameter_counts
    from t5pre.training.memory import memory_per_device

    config = T5Config.from_name("base")
    params = parameter_counts(config)["total"]
    kw = dict(batch_size=64, inputs_length=512, targets_length=114)
    dp = memory_per_device(config, optimizer="adamw", devices=4, **kw)
    fsdp = memory_per_device(config, optimizer="adamw", devices=4, strategy="fsdp", **kw)
    assert dp["parameters"] == 4 * params and dp["optimizer_state"] == 8 * params
    assert fsdp["parameters"] == dp["parameters"] / 4
    assert fsdp["optimizer_state"] == dp["optimizer_state"] / 4
    assert fsdp["activations"] == dp["activations"]  # both split the batch
    one = memory_per_device(config, optimizer="adamw", devices=1, **kw)
    assert one["activations"] == pytest.approx(4 * dp["activations"])
    ada = memory_per_device(config, **kw)
    assert ada["optimizer_state"] < 0.01 * ada["parameters"]
    remat = memory_per_device(config, remat=True, **kw)
    assert remat["activations"] < ada["activations"] / 4
    bf16 = memory_per_device(config, precision="mixed_bfloat16", **kw)
    assert bf16["activations"] == ada["activations"] / 2
    with pytest.raises(ValueError, match="strategy"):
        memory_per_device(config, strategy="zero3", **kw)


def test_model_info_prints_memory_per_device(capsys):
    from t5pre.cli import main

    assert main(["model", "info", "small", "--batch-size", "32", "--devices", "2",
                 "--strategy", "fsdp", "--optimizer", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "memory per device" in out and "fsdp, adamw" in out
    params_mib = 76_961_152 * 4 / 2 / 2**20
    assert f"{params_mib:,.1f}" in out and f"{2 * params_mib:,.1f}" in out  # params, AdamW state
    assert main(["model", "info", "small", "--devices", "0"]) == 2
    assert "--devices" in capsys.readouterr().err
