"""`t5pre predict` and the shared `Predictor`: inputs from arguments, files and stdin, batching,
truncation, scores, and clear errors. (Export parity with predict is in test_export.py.)"""

import io

import numpy as np
import pytest

from test_export import TEXTS, make_tiny_model  # one tiny model recipe for both files

DECODE = ["--targets-length", "8", "--inputs-length", "12"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.models.io import save_pretrained

    model, vocabulary = make_tiny_model(), default_vocabulary()
    directory = save_pretrained(model, vocabulary, tmp_path_factory.mktemp("predict") / "model")
    return model, vocabulary, directory


def run_predict(capsys, *argv):
    from t5pre.cli import main

    capsys.readouterr()
    code = main(["predict", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_arguments_file_stdin_and_batch_sizes_agree(pretrained, tmp_path, capsys, monkeypatch):
    _, _, model_dir = pretrained
    code, from_args, _ = run_predict(capsys, "--model-dir", str(model_dir), *DECODE, *TEXTS)
    assert code == 0
    lines = from_args.split("\n")[:-1]
    assert len(lines) == len(TEXTS)

    source = tmp_path / "inputs.txt"
    source.write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    for batch in ("2",):  # 5 inputs -> batches of 2, 2, 1
        code, out, _ = run_predict(capsys, "--model-dir", str(model_dir), *DECODE,
                                   "--input-file", str(source), "--batch-size", batch)
        assert code == 0 and out == from_args, batch

    monkeypatch.setattr("sys.stdin", io.StringIO("\r\n".join(TEXTS) + "\r\n"))
    code, out, _ = run_predict(capsys, "--model-dir", str(model_dir), *DECODE, "--input-file", "-")
    assert code == 0 and out == from_args


def test_outputs_and_scores_are_the_models_decoding(pretrained, capsys):
    from t5pre.evaluation.predict import Predictor, predict_texts
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.decoding import decode

    model, vocabulary, model_dir = pretrained
    code, out, _ = run_predict(capsys, "--model-dir", str(model_dir), *DECODE, "--scores", *TEXTS)
    assert code == 0
    scored = [line.split("\t", 1) for line in out.split("\n")[:-1]]

    settings = DecodeSettings(max_decode_length=8, max_input_length=12)
    predictor = Predictor(model, vocabulary, settings)
    ids, mask = predictor.preprocessor.encode_batch(TEXTS)
    tokens, scores = decode(model, ids, mask, max_length=8)
    expected = [vocabulary.decode(row) for row in np.asarray(tokens)]
    assert [text for _, text in scored] == expected
    np.testing.assert_allclose([float(s) for s, _ in scored], np.asarray(scores), atol=1e-3)
    assert predict_texts(model_dir, TEXTS, settings=settings, batch_size=2) == expected


def test_inputs_are_cut_to_max_input_length(pretrained):
    from t5pre.evaluation.predict import Predictor
    from t5pre.models.decode_settings import DecodeSettings

    model, vocabulary, _ = pretrained
    prefix = "the quick brown fox jumps over the lazy dog and keeps running"
    assert len(vocabulary.encode(prefix)) > 6
    predictor = Predictor(model, vocabulary, DecodeSettings(max_decode_length=6,
                                                            max_input_length=6))
    ids, mask = predictor.preprocessor.encode_batch([prefix, prefix + " far far away"])
    assert ids.shape == (2, 6) and ids[0, -1] == vocabulary.eos_id and mask.all()
    short, long = predictor.predict([prefix, prefix + " far far away, into the woods"])
    assert short == long  # only the first 5 tokens + EOS are seen
    wide = Predictor(model, vocabulary, DecodeSettings(max_decode_length=6, max_input_length=64))
    ids, _ = wide.preprocessor.encode_batch([prefix])
    assert ids.shape[1] == len(vocabulary.encode(prefix)) + 1


def test_beam_search_settings_reach_the_decoder(pretrained):
    from t5pre.evaluation.predict import Predictor
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.decoding import decode

    model, vocabulary, _ = pretrained
    assert DecodeSettings(beam_size=1, max_decode_length=5).decode_kwargs() == {
        "max_length": 5, "method": "greedy"}
    settings = DecodeSettings(beam_size=4, length_penalty=1.0, max_decode_length=8,
                              max_input_length=12)
    predictor = Predictor(model, vocabulary, settings)
    tokens, scores = predictor.generate_ids(TEXTS[:3])
    ids, mask = predictor.preprocessor.encode_batch(TEXTS[:3])
    expected, expected_scores = decode(model, ids, mask, max_length=8, method="beam", beam_size=4,
                                       alpha=1.0)
    np.testing.assert_array_equal(tokens, np.asarray(expected))
    np.testing.assert_allclose(scores, np.asarray(expected_scores), atol=1e-4)


def test_empty_input_file_prints_nothing(pretrained, tmp_path, capsys):
    _, _, model_dir = pretrained
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, out, err = run_predict(capsys, "--model-dir", str(model_dir), "--input-file", str(empty))
    assert (code, out, err) == (0, "", "")


@pytest.mark.parametrize("case", ["no_input", "both_inputs", "missing_file", "bad_utf8",
                                  "bad_batch", "bad_length", "bad_old_length",
                                  "bad_penalty"])
def test_bad_arguments_give_clear_errors(pretrained, tmp_path, capsys, case):
    _, _, model_dir = pretrained
    base = ["--model-dir", str(model_dir)]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbroken \xff\xfe line\n")
    argv, expected = {
        "no_input": (base, "no input"),
        "both_inputs": (base + ["--input-file", str(bad), "text"], "not both"),
        "missing_file": (base + ["--input-file", str(tmp_path / "none.txt")],
                         "none.txt: input file not found"),
        "bad_utf8": (base + ["--input-file", str(bad)], "bad.txt:2: not valid UTF-8"),
        "bad_batch": (base + ["--batch-size", "0", "x"], "--batch-size must be >= 1"),
        "bad_length": (base + ["--inputs-length", "1", "x"],
                       "--inputs-length must be an integer >= 2"),
        # an old spelling still works, and the error names it as typed
        "bad_old_length": (base + ["--max-input-length", "1", "x"],
                           "--max-input-length must be an integer >= 2"),
        "bad_penalty": (base + ["--beam-size", "2", "--length-penalty", "-1", "x"],
                        "--length-penalty must be >= 0"),
    }[case]
    code, out, err = run_predict(capsys, *argv)
    assert code == 2
    assert err.startswith("t5pre: error: ") and expected in err, err
    assert "Traceback" not in err
    if case == "bad_utf8":
        assert out == ""  # the error comes before any output of that batch


@pytest.mark.slow
def test_predict_runs_on_the_jax_backend(pretrained):
    """`t5pre predict` with KERAS_BACKEND=jax (jax.jit decoding) prints the TF backend's lines."""
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    from t5pre.evaluation.predict import Predictor
    from t5pre.models.decode_settings import DecodeSettings

    model, vocabulary, model_dir = pretrained
    expected = Predictor(model, vocabulary, DecodeSettings(
        max_decode_length=8, max_input_length=12)).predict_with_scores(TEXTS)
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    code = "import sys; from t5pre.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "predict", "--model-dir", str(model_dir),
                           *DECODE, "--scores", *TEXTS],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split("\t", 1) for line in proc.stdout.split("\n")[:-1]]
    assert [text for _, text in lines] == [text for text, _ in expected]
    np.testing.assert_allclose([float(s) for s, _ in lines], [s for _, s in expected], atol=1e-3)


def test_a_best_dir_defaults_to_its_fine_tuned_lengths(pretrained, tmp_path):
    """A fine-tuning run's best/ has no run config; its best.json holds the lengths the model
    was fine-tuned at, and predict (and export, which resolves the same way) uses them."""
    import json
    import shutil

    from t5pre.evaluation.predict import Predictor

    _, _, model_dir = pretrained
    best = tmp_path / "best"
    shutil.copytree(model_dir, best)
    assert Predictor.from_model_dir(best).settings.max_input_length == 512  # nothing recorded
    (best / "best.json").write_text(json.dumps(
        {"task": "t", "sequence_length": {"inputs": 12, "targets": 8}}))
    settings = Predictor.from_model_dir(best).settings
    assert (settings.max_input_length, settings.max_decode_length) == (12, 8)


def test_evaluate_and_predict_share_one_compiled_decoder(pretrained):
    from t5pre.evaluation.evaluate import decode_examples
    from t5pre.evaluation.predict import Predictor
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.decoding import compile_decoder

    model, vocabulary, _ = pretrained
    settings = DecodeSettings(max_decode_length=8, max_input_length=12)
    predictor = Predictor(model, vocabulary, settings)
    expected = predictor.predict(TEXTS[:2])
    run = compile_decoder(model, settings)
    assert compile_decoder(model, DecodeSettings(max_decode_length=8, max_input_length=30)) is run
    assert compile_decoder(model, DecodeSettings(max_decode_length=7)) is not run
    # evaluate's path (pre-tokenised ids) gives predict's strings for the same ids
    examples = [{"inputs": row[mask.astype(bool)]} for row, mask in
                zip(*predictor.preprocessor.encode_batch(TEXTS[:2]))]
    assert decode_examples(model, vocabulary, examples, settings, batch_size=1) == expected


def test_inference_commands_spell_their_shared_flags_alike(capsys):
    import t5pre
    from t5pre.cli import build_parser, main

    parser = build_parser()
    shared = ["--model-dir DIR", "--checkpoint STEP", "--beam-size K", "--length-penalty ALPHA",
              "--inputs-length N", "--targets-length N"]
    for command in ("predict", "evaluate", "export"):
        subparser = parser._subparsers._group_actions[0].choices[command]
        text = subparser.format_help()
        for flag in shared:
            assert flag in text, (command, flag)
        for old in ("--beam ", "--max-input-length", "--input-length", "--target-length",
                    "--max-decode-length", "``", "`"):
            assert old not in text, (command, old)
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"t5pre {t5pre.__version__}"
