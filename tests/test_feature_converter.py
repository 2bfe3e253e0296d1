"""EncDecFeatureConverter: fixed-length features, shift right per segment, packing invariants."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from t5pre.data.feature_converter import (  # noqa: E402
    ENCODER_DECODER_FEATURES, PACKING_FEATURES, EncDecFeatureConverter)
from t5pre.errors import ConfigError, DataError  # noqa: E402


def dataset(examples):
    return tf.data.Dataset.from_generator(
        lambda: ({"inputs": np.asarray(i, np.int32), "targets": np.asarray(t, np.int32),
                  "inputs_pretokenized": "raw"} for i, t in examples),
        output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                          "targets": tf.TensorSpec([None], tf.int32),
                          "inputs_pretokenized": tf.TensorSpec([], tf.string)})


def convert(examples, lengths, pack):
    out = EncDecFeatureConverter(pack=pack)(dataset(examples), lengths)
    return [{k: v.numpy() for k, v in ex.items()} for ex in out]


def random_examples(n, seed, max_in=12, max_tg=8):
    rng = np.random.default_rng(seed)
    # Ids include 0 inside examples: the converter must not take it for padding.
    return [(rng.integers(0, 20, size=rng.integers(1, max_in + 1)).tolist(),
             rng.integers(0, 20, size=rng.integers(1, max_tg + 1)).tolist()) for _ in range(n)]


def test_unpacked_features():
    examples = [([5, 0, 7, 1], [0, 9, 1]), ([3] * 12, [4] * 9)]
    out = convert(examples, {"inputs": 8, "targets": 6}, pack=False)
    assert len(out) == 2
    first, long = out
    assert set(first) == set(ENCODER_DECODER_FEATURES)
    assert first["encoder_token_ids"].tolist() == [5, 0, 7, 1, 0, 0, 0, 0]
    assert first["encoder_padding_mask"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert first["decoder_target_ids"].tolist() == [0, 9, 1, 0, 0, 0]
    assert first["decoder_token_ids"].tolist() == [0, 0, 9, 0, 0, 0]
    assert first["decoder_padding_mask"].tolist() == [1, 1, 1, 0, 0, 0]
    assert first["decoder_loss_weights"].dtype == np.float32
    # The leading target 0 is a real token: it carries loss weight.
    assert first["decoder_loss_weights"].tolist() == [1, 1, 1, 0, 0, 0]
    # Too-long examples are trimmed to the lengths.
    assert long["encoder_token_ids"].tolist() == [3] * 8
    assert long["decoder_target_ids"].tolist() == [4] * 6
    for ex in out:
        for key in ENCODER_DECODER_FEATURES:
            assert ex[key].shape == ((8,) if key.startswith("encoder") else (6,))
            if key != "decoder_loss_weights":
                assert ex[key].dtype == np.int32


def _segments(ids, segment_ids, k):
    return ids[segment_ids == k].tolist()


@pytest.mark.parametrize("seed,block", [(0, 128), (1, 128), (2, 7)])
def test_packing_invariants(seed, block, monkeypatch):
    from t5pre.data import feature_converter

    monkeypatch.setattr(feature_converter, "PACKING_BLOCK", block)  # 7: many block boundaries
    n_in, n_tg = 32, 16
    examples = random_examples(60, seed, max_in=24, max_tg=12)
    examples[5] = (list(range(40)), list(range(20)))  # trimmed first, then packed whole
    trimmed = [(i[:n_in], t[:n_tg]) for i, t in examples]
    out = convert(examples, {"inputs": n_in, "targets": n_tg}, pack=True)
    assert set(out[0]) == set(ENCODER_DECODER_FEATURES) | set(PACKING_FEATURES)
    recovered = []
    for ex in out:
        enc_seg, dec_seg = ex["encoder_segment_ids"], ex["decoder_segment_ids"]
        count = enc_seg.max()
        # Segments numbered 1..k contiguously, the same k on both sides, padding is 0 at the end.
        assert count == dec_seg.max()
        for seg, n in ((enc_seg, n_in), (dec_seg, n_tg)):
            real = seg[seg > 0]
            assert (np.diff(real) >= 0).all() and set(real) <= set(range(1, count + 1))
            assert (seg[len(real):] == 0).all()
        assert (ex["encoder_padding_mask"] == (enc_seg > 0)).all()
        assert (ex["decoder_padding_mask"] == (dec_seg > 0)).all()
        assert (ex["decoder_loss_weights"] == (dec_seg > 0)).all()
        for k in range(1, count + 1):
            inputs = _segments(ex["encoder_token_ids"], enc_seg, k)
            targets = _segments(ex["decoder_target_ids"], dec_seg, k)
            dec_in = _segments(ex["decoder_token_ids"], dec_seg, k)
            assert dec_in == [0] + targets[:-1], "shifted right within each segment"
            assert _segments(ex["encoder_positions"], enc_seg, k) == list(range(len(inputs)))
            assert _segments(ex["decoder_positions"], dec_seg, k) == list(range(len(targets)))
            recovered.append((inputs, targets))
        # Padding positions carry zeros everywhere.
        for key in ("encoder_token_ids", "encoder_positions"):
            assert (ex[key][enc_seg == 0] == 0).all()
        for key in ("decoder_token_ids", "decoder_target_ids", "decoder_positions"):
            assert (ex[key][dec_seg == 0] == 0).all()
    # No information lost, no example split, order kept.
    assert recovered == trimmed
    # Packing actually packs.
    assert len(out) < 0.75 * len(examples)


def test_packing_next_fit_boundaries():
    # Decoder side closes the first pair even though the encoder has room.
    examples = [([1, 2], [3, 4, 5]), ([6], [7, 8, 9, 10]), ([11] * 6, [12]), ([13, 14], [15])]
    out = convert(examples, {"inputs": 8, "targets": 6}, pack=True)
    assert [ex["encoder_segment_ids"].max() for ex in out] == [1, 2, 1]
    assert out[1]["encoder_token_ids"].tolist() == [6, 11, 11, 11, 11, 11, 11, 0]
    assert out[1]["encoder_segment_ids"].tolist() == [1, 2, 2, 2, 2, 2, 2, 0]
    assert out[1]["decoder_target_ids"].tolist() == [7, 8, 9, 10, 12, 0]
    assert out[1]["decoder_token_ids"].tolist() == [0, 7, 8, 9, 0, 0]
    assert out[1]["decoder_positions"].tolist() == [0, 1, 2, 3, 0, 0]
    assert out[2]["encoder_token_ids"].tolist() == [13, 14, 0, 0, 0, 0, 0, 0]


def test_packing_exact_fill_and_single_example():
    out = convert([([4] * 8, [5] * 6)], {"inputs": 8, "targets": 6}, pack=True)
    assert len(out) == 1
    assert out[0]["encoder_segment_ids"].tolist() == [1] * 8
    assert out[0]["decoder_positions"].tolist() == list(range(6))
    assert convert([], {"inputs": 8, "targets": 6}, pack=True) == []


def test_converter_errors():
    ds = tf.data.Dataset.from_tensors({"targets": tf.constant([1, 2])})
    with pytest.raises(DataError, match="inputs"):
        EncDecFeatureConverter()(ds, {"inputs": 4, "targets": 4})
    with pytest.raises(ConfigError, match="sequence_length"):
        EncDecFeatureConverter()(dataset([([1], [1])]), {"inputs": 4})
