"""`t5pre export`: a strings-in/strings-out SavedModel that a process without t5pre can serve.

Two exports of one tiny model (random weights, the shipped default vocabulary; the EOS logit is
scaled up so that outputs end at different lengths): greedy from a training model directory
(checkpoint + config.yaml) through the CLI, and beam search from a save_pretrained directory
through the Python API. A fresh Python process that imports only `tensorflow` and
`tensorflow_text` loads both and must produce exactly the strings of `t5pre predict`.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from t5pre.errors import ConfigError

TINY = dict(d_model=32, num_heads=2, d_kv=16, d_ff=64, num_encoder_layers=1,
            num_decoder_layers=1, vocab_size=4224, relative_attention_num_buckets=8,
            relative_attention_max_distance=16)
INPUTS_LENGTH, TARGETS_LENGTH = 16, 10  # the training directory's run config

TEXTS = [
    "summarize: the cat sat on the mat",
    "",
    "question: what does <extra_id_0> mean? context: a sentinel",
    "ünïcödé text, emoji \U0001F600 and 漢字",
    # longer than INPUTS_LENGTH tokens: cut to INPUTS_LENGTH - 1 tokens + EOS in both worlds
    "Return a new list containing all items from the iterable in ascending order; a custom key "
    "function can be supplied to customize the sort order, and the reverse flag can be set.",
]

LOADER = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # registers the SentencePiece ops used by the graph
    texts = json.loads(sys.stdin.read())
    result = {}
    for name in sys.argv[1:]:
        loaded = tf.saved_model.load(name)
        text_out = loaded.signatures["serving_default"](inputs=tf.constant(texts, tf.string))
        ids_out = loaded.signatures["generate_ids"](inputs=tf.constant(texts, tf.string))
        result[name] = {
            "outputs": [s.decode("utf-8") for s in text_out["outputs"].numpy()],
            "scores": text_out["scores"].numpy().tolist(),
            "ids": ids_out["ids"].numpy().tolist(),
            "id_scores": ids_out["scores"].numpy().tolist(),
            "lengths": ids_out["lengths"].numpy().tolist(),
            "signatures": sorted(loaded.signatures.keys()),
            "empty_batch": loaded.signatures["serving_default"](
                inputs=tf.constant([], tf.string))["outputs"].shape.as_list(),
        }
    result["t5pre_imported"] = any(m == "t5pre" or m.startswith("t5pre.") for m in sys.modules)
    print(json.dumps(result))
""")


def make_tiny_model():
    import keras

    from t5pre.models.config import T5Config
    from t5pre.models.t5 import T5Model

    keras.utils.set_random_seed(7)
    model = T5Model(T5Config(**TINY))
    # Make EOS (id 1) a plausible choice so that outputs stop at varying lengths.
    kernel = model.lm_head.kernel
    values = np.asarray(kernel.numpy())
    values[:, 1] *= 3.0
    kernel.assign(values)
    return model


def write_training_dir(model, vocabulary, directory, step=3):
    """A training model directory the way the trainer lays it out, via H6's public helpers."""
    import keras

    from t5pre.models.checkpoints import CheckpointKeeper
    from t5pre.models.io import write_model_files
    from t5pre.models.layout import RUN_CONFIG_FILE
    from t5pre.training.config import load_config, save_config

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True)
    run_config = load_config(None, [
        "model.name=tiny", "data.task=default_span_corruption",
        f"data.sequence_length.inputs={INPUTS_LENGTH}",
        f"data.sequence_length.targets={TARGETS_LENGTH}"])
    save_config(run_config, str(directory / RUN_CONFIG_FILE))
    write_model_files(directory, model, vocabulary)
    keeper = CheckpointKeeper(str(directory), model=model, optimizer=keras.optimizers.Adam())
    keeper.save(step, 0, 1)
    return directory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, vocabulary, training_dir, pretrained_dir) holding the same weights."""
    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.models.io import save_pretrained

    root = tmp_path_factory.mktemp("export")
    model, vocabulary = make_tiny_model(), default_vocabulary()
    training_dir = write_training_dir(model, vocabulary, root / "run")
    pretrained_dir = save_pretrained(model, vocabulary, root / "pretrained")
    return model, vocabulary, training_dir, pretrained_dir


@pytest.fixture(scope="module")
def exports(tiny):
    """Greedy export of the training directory (CLI), beam-3 export of the pretrained directory
    (Python API, over an existing directory with overwrite=True)."""
    from t5pre.cli import main
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.store import load_for_inference
    from t5pre.export import export_saved_model

    _, _, training_dir, pretrained_dir = tiny
    root = training_dir.parent
    greedy = root / "exports" / "greedy" / "1"
    assert main(["export", "--model-dir", str(training_dir), "--out", str(greedy)]) == 0

    beam = root / "exports" / "beam"
    beam.mkdir(parents=True)
    (beam / "stale.txt").write_text("an older export")
    loaded = load_for_inference(pretrained_dir)
    settings = DecodeSettings(beam_size=3, length_penalty=0.6, max_decode_length=TARGETS_LENGTH,
                              max_input_length=INPUTS_LENGTH)
    export_saved_model(loaded.model, loaded.vocabulary, beam, settings, overwrite=True)
    return {"greedy": greedy, "beam": beam}


@pytest.fixture(scope="module")
def served(exports):
    """What a fresh process with only tensorflow + tensorflow_text returns for TEXTS."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    script = [sys.executable, "-c", LOADER, str(exports["greedy"]), str(exports["beam"])]
    proc = subprocess.run(script, input=json.dumps(TEXTS), capture_output=True, text=True,
                          env=env, cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"greedy": result[str(exports["greedy"])], "beam": result[str(exports["beam"])],
            "t5pre_imported": result["t5pre_imported"]}


def predict_cli(capsys, model_dir, *extra):
    from t5pre.cli import main

    capsys.readouterr()
    assert main(["predict", "--model-dir", str(model_dir), *extra, *TEXTS]) == 0
    return capsys.readouterr().out.split("\n")[:-1]


@pytest.mark.slow
def test_fresh_process_needs_no_t5pre(served):
    assert served["t5pre_imported"] is False
    for name in ("greedy", "beam"):
        assert served[name]["signatures"] == ["generate_ids", "serving_default"]
        assert served[name]["empty_batch"] == [0]


@pytest.mark.slow
def test_greedy_export_equals_t5pre_predict_and_python_decoding(tiny, served, capsys):
    from t5pre.evaluation.predict import Predictor
    from t5pre.models.decode_settings import DecodeSettings

    model, vocabulary, training_dir, _ = tiny
    got = served["greedy"]
    # t5pre predict on the training directory defaults to its run's lengths, like the export.
    assert predict_cli(capsys, training_dir) == got["outputs"]
    predictor = Predictor(model, vocabulary, DecodeSettings(
        max_decode_length=TARGETS_LENGTH, max_input_length=INPUTS_LENGTH))
    ids, scores = predictor.generate_ids(TEXTS)
    np.testing.assert_array_equal(np.asarray(got["ids"]), ids)
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-4, atol=1e-4)
    assert got["outputs"] == [vocabulary.decode(row) for row in got["ids"]]
    # the model stops at different lengths; `lengths` counts tokens through EOS
    lengths = got["lengths"]
    for row, length in zip(got["ids"], lengths):
        assert 1 in row[:length] or length == TARGETS_LENGTH
        assert 1 not in row[: length - 1] and not any(row[length:])
    assert len(set(lengths)) > 1 and min(lengths) < TARGETS_LENGTH


@pytest.mark.slow
def test_beam_export_equals_t5pre_predict(tiny, served, capsys):
    from t5pre.models.decoding import decode

    model, vocabulary, _, pretrained_dir = tiny
    got = served["beam"]
    lines = predict_cli(capsys, pretrained_dir, "--beam", "3", "--max-decode-length",
                        str(TARGETS_LENGTH), "--max-input-length", str(INPUTS_LENGTH))
    assert lines == got["outputs"]
    assert got["scores"] == pytest.approx(got["id_scores"])
    # beam search finds sequences at least as likely (length-normalised) as greedy, so on at
    # least one input it differs from the greedy export
    assert got["outputs"] != served["greedy"]["outputs"]
    # and it is H3's beam search: compare with a direct call on the same padded batch
    from t5pre.evaluation.predict import Predictor
    from t5pre.models.decode_settings import DecodeSettings

    predictor = Predictor(model, vocabulary, DecodeSettings(
        beam_size=3, max_decode_length=TARGETS_LENGTH, max_input_length=INPUTS_LENGTH))
    ids, mask = predictor.preprocessor.encode_batch(TEXTS)
    tokens, _ = decode(model, ids, mask, max_length=TARGETS_LENGTH, method="beam", beam_size=3,
                       alpha=0.6)
    np.testing.assert_array_equal(np.asarray(got["ids"]), np.asarray(tokens))


@pytest.mark.slow
def test_export_metadata_and_overwrite(tiny, exports):
    from t5pre.export import read_export_metadata

    greedy = read_export_metadata(exports["greedy"])
    assert greedy["decoding"] == {"method": "greedy", "beam": 1, "length_penalty": None,
                                  "max_input_length": INPUTS_LENGTH,
                                  "max_decode_length": TARGETS_LENGTH, "xla": True}
    assert greedy["source"]["layout"] == "training"
    assert greedy["source"]["checkpoint"].endswith("ckpt-3")
    assert greedy["vocabulary"]["vocab_size"] == tiny[1].vocab_size
    beam = read_export_metadata(exports["beam"])
    assert beam["decoding"]["beam"] == 3 and beam["decoding"]["length_penalty"] == 0.6
    # overwrite replaced the old directory entirely, and no staging directories are left
    assert not (exports["beam"] / "stale.txt").exists()
    for parent in (exports["beam"].parent, exports["greedy"].parent):
        assert not [p.name for p in parent.iterdir()
                    if p.name.startswith(".") or "_temp-" in p.name or "_old-" in p.name]


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exports):
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    if not cli.exists():
        pytest.skip("saved_model_cli is not installed beside this python")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([str(cli), "show", "--dir", str(exports["greedy"]), "--all"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "signature_def['serving_default']" in out
    assert "signature_def['generate_ids']" in out
    serving = out.split("signature_def['serving_default']")[1]
    assert "inputs['inputs'] tensor_info:" in serving and "dtype: DT_STRING" in serving
    assert "outputs['outputs'] tensor_info:" in serving


def test_graph_input_encoding_matches_python(tiny):
    """The in-graph tokenisation (cut, EOS, pad, mask) equals `t5pre predict`'s."""
    import tensorflow as tf

    from t5pre.evaluation.predict import Predictor
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.preprocessing import Seq2SeqPreprocessor

    model, vocabulary, _, _ = tiny
    for limit in (2, 5, INPUTS_LENGTH, 200):
        ids, mask = Seq2SeqPreprocessor(vocabulary, limit).encode_tf(tf.constant(TEXTS))
        expected_ids, expected_mask = Predictor(model, vocabulary, DecodeSettings(
            max_input_length=limit, max_decode_length=4)).preprocessor.encode_batch(TEXTS)
        np.testing.assert_array_equal(ids.numpy(), expected_ids)
        np.testing.assert_array_equal(mask.numpy(), expected_mask)
        assert ids.shape[1] <= limit


def test_failed_export_leaves_nothing_behind(tiny, tmp_path, monkeypatch):
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.export import export_saved_model, saved_model

    model, vocabulary, _, _ = tiny
    calls = []

    def half_written_then_crash(model, vocabulary, settings, path):
        calls.append(path)
        pathlib.Path(path, "saved_model.pb").write_bytes(b"\x08\x01 half a graph")
        pathlib.Path(path, "variables").mkdir()
        raise OSError("disk full (injected)")

    monkeypatch.setattr(saved_model, "_write_saved_model", half_written_then_crash)
    settings = DecodeSettings(max_decode_length=4, max_input_length=8)
    target = tmp_path / "exports" / "1"
    with pytest.raises(OSError, match="injected"):
        export_saved_model(model, vocabulary, target, settings)
    assert calls and not pathlib.Path(calls[0]).exists()
    assert not target.exists() and list(target.parent.iterdir()) == []

    # a failed --overwrite keeps the previous export intact
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"the previous, complete export")
    with pytest.raises(OSError, match="injected"):
        export_saved_model(model, vocabulary, target, settings, overwrite=True)
    assert (target / "saved_model.pb").read_bytes() == b"the previous, complete export"
    assert [p.name for p in target.parent.iterdir()] == ["1"]


def test_existing_export_is_refused_without_overwrite(tiny, tmp_path, capsys):
    from t5pre.cli import main
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.export import export_saved_model

    model, vocabulary, training_dir, _ = tiny
    target = tmp_path / "1"
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"keep me")
    assert main(["export", "--model-dir", str(training_dir), "--out", str(target)]) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="already exists"):
        export_saved_model(model, vocabulary, target, DecodeSettings(max_decode_length=4,
                                                                     max_input_length=8))
    assert (target / "saved_model.pb").read_bytes() == b"keep me"


@pytest.mark.parametrize("case", ["missing_dir", "no_checkpoint", "no_vocabulary",
                                  "checkpoint_on_pretrained", "unknown_step", "bad_beam"])
def test_bad_input_gives_a_clear_error(tiny, tmp_path, capsys, case):
    import shutil

    from t5pre.cli import main

    _, _, training_dir, pretrained_dir = tiny
    model_dir, extra, expected = training_dir, [], None
    if case == "missing_dir":
        model_dir, expected = tmp_path / "nope", "model directory not found"
    elif case == "no_checkpoint":
        model_dir = tmp_path / "run"
        shutil.copytree(training_dir, model_dir, ignore=shutil.ignore_patterns("checkpoints"))
        expected = "no checkpoint found"
    elif case == "no_vocabulary":
        model_dir = tmp_path / "pretrained"
        shutil.copytree(pretrained_dir, model_dir)
        (model_dir / "spiece.model").unlink()
        expected = "spiece.model is missing"
    elif case == "checkpoint_on_pretrained":
        model_dir, extra, expected = pretrained_dir, ["--checkpoint", "3"], "pretrained directory"
    elif case == "unknown_step":
        extra, expected = ["--checkpoint", "99"], "checkpoint not found (available steps: 3)"
    elif case == "bad_beam":
        extra, expected = ["--beam", "0"], "--beam must be an integer >= 1"
    out = tmp_path / "export"
    assert main(["export", "--model-dir", str(model_dir), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5pre: error: ") and expected in err, err
    assert "Traceback" not in err
    assert not out.exists()
    assert main(["predict", "--model-dir", str(model_dir), *extra, "some text"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5pre: error: ") and expected in err, err


def test_export_defaults_to_the_fine_tuned_lengths(tiny, tmp_path, monkeypatch):
    """A fine-tuning run's best/ records its lengths in best.json; export uses them (before,
    it fell back to 512 / 128). The SavedModel writing itself is stubbed out: only the
    settings it receives matter here."""
    import shutil

    from t5pre.cli import main
    from t5pre.export import read_export_metadata, saved_model

    _, _, _, pretrained_dir = tiny
    best = tmp_path / "best"
    shutil.copytree(pretrained_dir, best)
    (best / "best.json").write_text(json.dumps(
        {"task": "t", "sequence_length": {"inputs": 24, "targets": 6}}))
    received = []
    monkeypatch.setattr(saved_model, "_write_saved_model",
                        lambda model, vocabulary, settings, path: received.append(settings))
    assert main(["export", "--model-dir", str(best), "--out", str(tmp_path / "1")]) == 0
    assert [(s.max_input_length, s.max_decode_length) for s in received] == [(24, 6)]
    decoding = read_export_metadata(tmp_path / "1")["decoding"]
    assert (decoding["max_input_length"], decoding["max_decode_length"]) == (24, 6)
