"""Hugging Face T5 -> T5Model conversion: logits and greedy decoding match transformers' own
model (T5.1.1 untied gated-GELU, T5 1.0 tied ReLU, and transformers-5's tied-unscaled save)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from t5pre.errors import CheckpointError  # noqa: E402
from t5pre.models.hf_convert import from_hf, read_safetensors  # noqa: E402

HF_DIMS = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
               num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
               dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def tiny_spm_bytes():
    import io
    import random

    import sentencepiece as spm

    words = "the quick brown fox jumps over the lazy dog and a cat sleeps on a mat".split()
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(words) for _ in range(10)) for _ in range(200)]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=40, pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    return buffer.getvalue()


def write_checkpoint(model, directory, config_overrides=None, include=None, drop=()):
    """Save like a real checkpoint: config.json + model.safetensors written by hand, so the file
    has exactly the tensors we choose (independent of the transformers version's tying rules)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if (include is None or include(k)) and k not in drop}
    safetensors_torch.save_file(state, str(directory / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("scale_decoder_outputs", None)
    config.update(config_overrides or {})
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def hf_t5_1_1(seed=0):
    """An untied gated-GELU T5.1.1 (separate lm_head, no output scaling)."""
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(
        transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **HF_DIMS))
    model.lm_head.weight = torch.nn.Parameter(torch.randn(64, 32) * 0.2)  # really untied
    return model.eval()


def hf_t5_1_0(seed=1):
    torch.manual_seed(seed)
    return transformers.T5ForConditionalGeneration(
        transformers.T5Config(feed_forward_proj="relu", tie_word_embeddings=True, **HF_DIMS)).eval()


def inputs():
    rng = np.random.default_rng(0)
    enc = rng.integers(3, 60, (2, 9))
    enc_mask = np.ones_like(enc)
    enc[1, 6:], enc_mask[1, 6:] = 0, 0
    dec = np.concatenate([np.zeros((2, 1), int), rng.integers(3, 60, (2, 5))], axis=1)
    dec_mask = np.ones_like(dec)
    dec[1, 4:], dec_mask[1, 4:] = 0, 0
    return enc, enc_mask, dec, dec_mask


def assert_parity(hf_model, model):
    from t5pre.models.decoding import decode

    enc, enc_mask, dec, dec_mask = inputs()
    with torch.no_grad():
        expected = hf_model(
            input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_mask),
            decoder_input_ids=torch.tensor(dec), decoder_attention_mask=torch.tensor(dec_mask),
        ).logits.numpy()
    got = np.asarray(model({
        "encoder_token_ids": enc, "encoder_padding_mask": enc_mask,
        "decoder_token_ids": dec, "decoder_padding_mask": dec_mask,
    }))
    real = dec_mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() < 1e-4

    with torch.no_grad():
        hf_tokens = hf_model.generate(
            input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_mask), max_new_tokens=8,
            do_sample=False, num_beams=1, decoder_start_token_id=0, eos_token_id=1,
            pad_token_id=0).numpy()[:, 1:]
    tokens, _ = decode(model, enc, enc_mask, max_length=8)
    tokens = np.asarray(tokens)[:, : hf_tokens.shape[1]]
    np.testing.assert_array_equal(tokens, hf_tokens)


def test_t5_1_1_layout_parity_and_vocabulary(tmp_path):
    hf = hf_t5_1_1()
    directory = write_checkpoint(hf, tmp_path / "t511",
                                 include=lambda k: not k.endswith("embed_tokens.weight"))
    (directory / "spiece.model").write_bytes(tiny_spm_bytes())
    (directory / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 8}))
    model, vocabulary = from_hf(directory)
    assert not model.config.tie_word_embeddings and model.config.feed_forward_proj == "gated-gelu"
    assert vocabulary is not None and vocabulary.extra_ids == 8 and vocabulary.vocab_size <= 64
    assert vocabulary.sentinel(0) == vocabulary.vocab_size - 1
    assert_parity(hf, model)


def test_t5_1_0_layout_parity(tmp_path):
    hf = hf_t5_1_0()
    hf.save_pretrained(tmp_path / "t510")  # transformers' own save: lm_head absent (tied)
    model, vocabulary = from_hf(tmp_path / "t510")
    assert model.config.tie_word_embeddings and model.config.feed_forward_proj == "relu"
    assert model.lm_head is None and vocabulary is None
    assert_parity(hf, model)


def test_transformers5_tied_unscaled_save_parity(tmp_path):
    torch.manual_seed(2)
    hf = transformers.T5ForConditionalGeneration(
        transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **HF_DIMS)
    ).eval()
    if not hasattr(hf.config, "scale_decoder_outputs"):
        pytest.skip("transformers < 5 unties the head itself (covered by the T5.1.1 test)")
    hf.save_pretrained(tmp_path / "t5v5")
    model, _ = from_hf(tmp_path / "t5v5")
    assert not model.config.tie_word_embeddings  # embedding copied into an unscaled head
    assert_parity(hf, model)


def test_convert_cli_writes_a_loadable_model_dir(tmp_path):
    from t5pre.cli import main
    from t5pre.models.io import load_pretrained

    hf = hf_t5_1_1()
    directory = write_checkpoint(hf, tmp_path / "hf")
    (directory / "spiece.model").write_bytes(tiny_spm_bytes())
    assert main(["convert", "hf", str(directory), str(tmp_path / "out"), "--extra-ids", "8"]) == 0
    model, vocabulary = load_pretrained(tmp_path / "out")
    assert vocabulary is not None
    assert_parity(hf, model)


def test_bad_checkpoints_are_reported_clearly(tmp_path, capsys):
    from t5pre.cli import main

    hf = hf_t5_1_1()
    with pytest.raises(CheckpointError, match="not found"):
        from_hf(tmp_path / "nowhere")

    missing = write_checkpoint(hf, tmp_path / "missing",
                               drop=("decoder.block.1.layer.2.DenseReluDense.wo.weight",))
    with pytest.raises(CheckpointError, match=r"missing tensors \(1\).*decoder\.block\.1\.layer\.2"):
        from_hf(missing)

    extra = write_checkpoint(hf, tmp_path / "extra", config_overrides={"num_decoder_layers": 1})
    with pytest.raises(CheckpointError, match=r"unexpected tensors.*decoder\.block\.1"):
        from_hf(extra)

    wrong_shape = write_checkpoint(hf, tmp_path / "shape", config_overrides={"d_ff": 40})
    with pytest.raises(CheckpointError, match=r"wi_0.*\(32, 80\)|shape"):
        from_hf(wrong_shape)

    small_vocab = write_checkpoint(hf, tmp_path / "vocab")
    (small_vocab / "spiece.model").write_bytes(tiny_spm_bytes())
    with pytest.raises(CheckpointError, match="vocabulary size mismatch"):
        from_hf(small_vocab, extra_ids=40)

    truncated = write_checkpoint(hf, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        from_hf(truncated)
    # the CLI turns it into one line, exit status 2
    assert main(["convert", "hf", str(truncated), str(tmp_path / "o")]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bfloat16_safetensors_are_widened_exactly(tmp_path):
    values = torch.randn(3, 5).to(torch.bfloat16)
    safetensors_torch.save_file({"w": values, "h": values.half()}, str(tmp_path / "w.safetensors"))
    read = read_safetensors(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(read["w"], values.float().numpy())
    np.testing.assert_array_equal(read["h"], values.half().float().numpy())
