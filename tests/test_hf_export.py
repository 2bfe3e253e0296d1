"""`t5pre export --format hf`: transformers loads the directory offline and gives t5pre's logits,
greedy tokens and token ids; t5pre -> HF -> t5pre gives back identical weights.

Tiny random models (T5.1.1: untied gated-GELU; T5 1.0: tied ReLU) with the shipped default
vocabulary (byte fallback, 100 sentinels inside spiece.model), from each kind of model directory:
a training directory (checkpoint + config.yaml, through the CLI), a save_pretrained directory
and a fine-tuning best/ directory (save_pretrained + best.json).
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from test_export import write_training_dir  # noqa: E402

from t5pre.errors import CheckpointError, MissingDependencyError  # noqa: E402

TINY = dict(d_model=32, num_heads=2, d_kv=16, d_ff=48, num_encoder_layers=2,
            num_decoder_layers=2, vocab_size=4224, relative_attention_num_buckets=8,
            relative_attention_max_distance=16, dropout_rate=0.0)

TEXTS = [
    "summarize: the cat sat on the mat",
    "fill: the quick <extra_id_0> fox jumps over <extra_id_1>",
    "a cat<extra_id_3>sleeps <extra_id_99> on  the   mat ",
    "<extra_id_0>",
    "   leading and trailing spaces   ",
    "ünïcödé, emoji \U0001F600, 漢字 and tabs\tand\nnewlines ﬁ ①",
    "",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def make_model(gated: bool, seed: int):
    import keras

    from t5pre.models.config import T5Config
    from t5pre.models.t5 import T5Model

    keras.utils.set_random_seed(seed)
    config = T5Config(**TINY, feed_forward_proj="gated-gelu" if gated else "relu",
                      tie_word_embeddings=not gated)
    model = T5Model(config)
    # Random scales instead of ones, and EOS made likely: every weight matters, outputs vary.
    for norm in [b.attention_norm for b in model.encoder_blocks] + [model.decoder_final_norm]:
        norm.scale.assign(np.random.default_rng(seed).uniform(0.5, 1.5, norm.scale.shape))
    if model.lm_head is not None:
        values = np.asarray(model.lm_head.kernel.numpy())
        values[:, 1] *= 3.0
        model.lm_head.kernel.assign(values)
    return model


@pytest.fixture(scope="module")
def vocabulary():
    from t5pre.data.vocabulary import default_vocabulary

    return default_vocabulary()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, vocabulary):
    """{"t5_1_1": (model, HF dir) exported from a training dir by the CLI,
        "t5_1_0": (model, HF dir) exported from a save_pretrained dir by the Python API}."""
    from t5pre.cli import main
    from t5pre.models.hf_export import export_model_dir
    from t5pre.models.io import save_pretrained

    root = tmp_path_factory.mktemp("hf_export")
    t511, t510 = make_model(gated=True, seed=3), make_model(gated=False, seed=4)
    training_dir = write_training_dir(t511, vocabulary, root / "run")
    assert main(["export", "--format", "hf", "--model-dir", str(training_dir),
                 "--out", str(root / "hf_t511")]) == 0
    pretrained = save_pretrained(t510, vocabulary, root / "pretrained")
    out, loaded = export_model_dir(pretrained, root / "hf_t510")
    assert loaded.layout == "pretrained"
    return {"t5_1_1": (t511, root / "hf_t511"), "t5_1_0": (t510, out), "root": root}


def features(vocabulary):
    """Encoder ids from TEXTS (t5pre's convention: tokens + EOS, padded) and decoder ids."""
    rows = [vocabulary.encode(t)[:23] + [1] for t in TEXTS]
    width = max(len(r) for r in rows)
    enc = np.zeros((len(rows), width), "int64")
    for i, r in enumerate(rows):
        enc[i, : len(r)] = r
    enc_mask = (enc != 0).astype("int64")
    enc_mask[:, 0] = 1  # the empty text is just EOS
    rng = np.random.default_rng(0)
    dec = np.concatenate([np.zeros((len(rows), 1), int), rng.integers(3, 4100, (len(rows), 6))], 1)
    dec_mask = np.ones_like(dec)
    dec[1, 4:], dec_mask[1, 4:] = 0, 0
    return enc, enc_mask, dec, dec_mask


@pytest.mark.parametrize("layout", ["t5_1_1", "t5_1_0"])
def test_transformers_gives_t5pre_logits_and_greedy_tokens(exported, vocabulary, layout):
    from t5pre.models.decoding import decode

    model, directory = exported[layout]
    config = json.loads((directory / "config.json").read_text())
    assert config["tie_word_embeddings"] is (layout == "t5_1_0")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
    enc, enc_mask, dec, dec_mask = features(vocabulary)
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_mask),
                      decoder_input_ids=torch.tensor(dec),
                      decoder_attention_mask=torch.tensor(dec_mask)).logits.numpy()
    got = np.asarray(model({"encoder_token_ids": enc, "encoder_padding_mask": enc_mask,
                            "decoder_token_ids": dec, "decoder_padding_mask": dec_mask}))
    real = dec_mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() < 1e-4

    with torch.no_grad():
        hf_tokens = hf.generate(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_mask),
                                max_new_tokens=10, do_sample=False, num_beams=1).numpy()[:, 1:]
    tokens, _ = decode(model, enc, enc_mask, max_length=10)
    tokens = np.asarray(tokens)[:, : hf_tokens.shape[1]]
    np.testing.assert_array_equal(tokens, hf_tokens)
    if layout == "t5_1_1":  # its boosted EOS stops some rows early: EOS handling compared too
        assert (hf_tokens == 1).any(axis=1).any()


@pytest.mark.parametrize("layout", ["t5_1_1", "t5_1_0"])
def test_the_only_tying_warning_is_the_one_transformers_gives_every_untied_t5(exported, layout):
    """config.json says tie_word_embeddings false for T5.1.1, yet transformers >= 5 logs "so we
    will NOT tie them": its T5Config reads the key as "do not scale the decoder output" and sets
    tie_word_embeddings true for every T5, so each untied T5 (t5-v1_1, flan-t5) gets it. A T5 1.0
    export loads without it, and the untied head loads as exported."""
    import logging

    model, directory = exported[layout]
    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("transformers"), Keep(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        hf = transformers.T5ForConditionalGeneration.from_pretrained(directory)
        transformers.AutoTokenizer.from_pretrained(directory)
    finally:
        logger.removeHandler(handler)
    tying = [m for m in messages if "tie" in m.lower()]
    transformers_5 = int(transformers.__version__.split(".")[0]) >= 5
    if layout == "t5_1_0" or not transformers_5:
        assert tying == [], tying
    else:
        assert len(tying) == 1 and "shared.weight to lm_head.weight" in tying[0], tying
        assert "NOT tie them" in tying[0]
        # transformers' own doing: no config it reads can say false
        assert transformers.T5Config(tie_word_embeddings=False).tie_word_embeddings is True
    untied = layout == "t5_1_1"
    assert (hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr()) is untied
    if untied:
        np.testing.assert_array_equal(hf.lm_head.weight.detach().numpy(),
                                      np.asarray(model.lm_head.kernel.numpy()).T)


def test_tokenizer_gives_t5pre_ids_for_text_with_sentinels(exported, vocabulary):
    _, directory = exported["t5_1_1"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert len(tokenizer) == vocabulary.vocab_size
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids == vocabulary.encode(text) + [vocabulary.eos_id], text
        assert tokenizer.decode(ids[:-1]) == vocabulary.decode(ids[:-1])
        # sentinels are special tokens, as in Hugging Face's T5
        words = [i for i in ids[:-1] if not vocabulary.is_sentinel(i)]
        assert tokenizer.decode(ids, skip_special_tokens=True) == vocabulary.decode(words)
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == vocabulary.sentinel(0)
    assert tokenizer.convert_tokens_to_ids("<extra_id_99>") == vocabulary.sentinel(99)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.model_max_length == 16  # the training run's inputs length


@pytest.mark.parametrize("layout", ["t5_1_1", "t5_1_0"])
def test_round_trip_t5pre_hf_t5pre_gives_identical_weights(exported, layout):
    from t5pre.models.hf_convert import from_hf

    model, directory = exported[layout]
    back, vocabulary = from_hf(directory)
    assert back.config.to_dict() == model.config.to_dict() | {"name": back.config.name}
    assert vocabulary is not None and vocabulary.extra_ids == 100
    assert len(back.weights) == len(model.weights)
    for ours, theirs in zip(model.weights, back.weights):
        assert ours.path == theirs.path
        np.testing.assert_array_equal(np.asarray(ours.numpy()), np.asarray(theirs.numpy()))


def test_best_dir_exports_and_existing_target_is_refused(exported, vocabulary, capsys):
    from t5pre.cli import main
    from t5pre.models.io import save_pretrained

    root = exported["root"]
    model, _ = exported["t5_1_1"]
    best = save_pretrained(model, vocabulary, root / "ft" / "best")
    (best / "best.json").write_text(json.dumps({"metric": "rouge", "score": 1.0, "step": 5}))
    out = root / "hf_best"
    assert main(["export", "--format", "hf", "--model-dir", str(best), "--out", str(out)]) == 0
    assert "T5.1.1" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "config.json", "generation_config.json", "model.safetensors", "spiece.model",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"])

    assert main(["export", "--format", "hf", "--model-dir", str(best), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--format", "hf", "--model-dir", str(root / "nowhere"),
                 "--out", str(root / "o")]) == 2
    assert "not found" in capsys.readouterr().err and not (root / "o").exists()
    # --overwrite replaces it, and leaves no staging directories behind
    assert main(["export", "--format", "hf", "--model-dir", str(best), "--out", str(out),
                 "--overwrite"]) == 0
    assert not [p for p in root.iterdir()
                if p.name.startswith(".") or "_temp-" in p.name or "_old-" in p.name]


def test_a_failed_export_leaves_nothing(exported, vocabulary, monkeypatch, tmp_path):
    from t5pre.models import hf_export

    model, _ = exported["t5_1_0"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hf_export, "_write_tokenizer", broken)
    with pytest.raises(OSError, match="disk full"):
        hf_export.export_hf(model, vocabulary, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_missing_optional_package_is_a_one_line_hint(monkeypatch, capsys, tmp_path):
    import sys

    from t5pre.cli import main
    from t5pre.optional import require

    from t5pre.models.hf_convert import read_safetensors

    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")

    for name in ("safetensors", "safetensors.numpy"):  # None makes `import safetensors` fail
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"needs safetensors.*pip install 't5pre\[hf\]'"):
        require("safetensors.numpy", "exporting")
    assert main(["export", "--format", "hf", "--model-dir", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "t5pre[hf]" in err
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(MissingDependencyError, match=r"t5pre\[tfds\]"):
        require("tensorflow_datasets", "a TFDS task")
