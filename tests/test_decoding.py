"""Cached decoding: agrees with full recomputation, EOS handling, beam search, sampling, tracing."""

import numpy as np
import pytest

from t5pre.errors import ConfigError
from t5pre.models.config import T5Config

MICRO = dict(d_model=32, num_heads=2, d_kv=8, d_ff=48, num_encoder_layers=1,
             num_decoder_layers=1, vocab_size=64, relative_attention_num_buckets=8,
             relative_attention_max_distance=16)


@pytest.fixture(scope="module")
def model():
    import keras

    from t5pre.models.t5 import T5Model

    keras.utils.set_random_seed(1)
    return T5Model(T5Config(**MICRO))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 60, (3, 7)).astype("int32")
    mask = np.ones_like(ids)
    ids[1, 4:], mask[1, 4:] = 0, 0
    return ids, mask


def full_logits(model, ids, mask, decoder_tokens):
    decoder_in = np.concatenate([np.zeros((len(ids), 1), "int32"), decoder_tokens[:, :-1]], axis=1)
    return np.asarray(model({
        "encoder_token_ids": ids, "encoder_padding_mask": mask,
        "decoder_token_ids": decoder_in, "decoder_padding_mask": np.ones_like(decoder_in),
    }))


def test_decode_step_logits_equal_the_full_decoder(model, batch):
    ids, mask = batch
    tokens = np.random.default_rng(2).integers(2, 64, (3, 6)).astype("int32")
    expected = full_logits(model, ids, mask, tokens)
    cross = model.cross_key_values(model.encode(ids, mask))
    cache = model.init_cache(3, 6)
    previous = np.zeros((3,), "int32")
    for i in range(6):
        logits, cache = model.decode_step(previous, i, cache, cross, mask)
        np.testing.assert_allclose(np.asarray(logits), expected[:, i], atol=1e-5)
        previous = tokens[:, i]


def test_cached_greedy_equals_uncached_greedy(model, batch):
    from t5pre.models.decoding import decode, uncached_greedy

    ids, mask = batch
    tokens, scores = decode(model, ids, mask, max_length=6)
    np.testing.assert_array_equal(np.asarray(tokens), uncached_greedy(model, ids, mask, 6))
    # scores are the summed log-probabilities of the chosen tokens
    logits = full_logits(model, ids, mask, np.asarray(tokens))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    tokens = np.asarray(tokens)
    picked = np.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]
    ended_before = np.cumsum(tokens == 1, axis=1) - (tokens == 1)  # positions after an EOS
    np.testing.assert_allclose(np.asarray(scores), (picked * (ended_before == 0)).sum(-1), rtol=1e-4)


def test_eos_stops_a_row_and_pads_after_it(model, batch):
    from t5pre.models.decoding import decode

    ids, mask = batch
    free, _ = decode(model, ids, mask, max_length=6, eos_id=-1)  # never stops
    free = np.asarray(free)
    eos = int(free[0, 2])
    stop = int(np.argmax(free[0] == eos))  # first occurrence in row 0
    tokens, _ = decode(model, ids, mask, max_length=6, eos_id=eos)
    tokens = np.asarray(tokens)
    for row in range(3):
        hits = np.flatnonzero(free[row] == eos)
        end = hits[0] + 1 if len(hits) else 8
        np.testing.assert_array_equal(tokens[row, :end], free[row, :end])
        assert (tokens[row, end:] == 0).all()
    assert (tokens[0, stop + 1:] == 0).all() and tokens[0, stop] == eos


def test_beam_of_one_equals_greedy(model, batch):
    from t5pre.models.decoding import decode

    ids, mask = batch
    greedy, greedy_scores = decode(model, ids, mask, max_length=6, eos_id=-1)
    beam, beam_scores = decode(model, ids, mask, max_length=6, method="beam", beam_size=1,
                               alpha=0.0, eos_id=-1)
    np.testing.assert_array_equal(np.asarray(beam), np.asarray(greedy))
    np.testing.assert_allclose(np.asarray(beam_scores), np.asarray(greedy_scores), rtol=1e-5)
    # With EOS, a beam of one also keeps the best *finished* hypothesis seen on the way, which
    # may end earlier than greedy's; it is never worse than greedy's sequence.
    greedy, greedy_scores = decode(model, ids, mask, max_length=6)
    beam, beam_scores = decode(model, ids, mask, max_length=6, method="beam", beam_size=1, alpha=0.0)
    assert (np.asarray(beam_scores) >= np.asarray(greedy_scores) - 1e-4).all()


def test_wide_beam_finds_the_exhaustive_best(model, batch):
    """With as many beams as the vocabulary, two steps of beam search are exhaustive."""
    from t5pre.models.decoding import decode

    ids, mask = batch[0][:1], batch[1][:1]
    tokens, score = decode(model, ids, mask, max_length=2, method="beam", beam_size=64,
                           alpha=0.0, eos_id=-1)
    firsts = np.arange(64, dtype="int32")[:, None]
    logits = full_logits(model, np.repeat(ids, 64, 0), np.repeat(mask, 64, 0),
                         np.concatenate([firsts, np.zeros_like(firsts)], axis=1))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    first = np.arange(64)
    total = log_probs[first, 0, first][:, None] + log_probs[:, 1, :]  # [first, second]
    best = np.unravel_index(np.argmax(total), total.shape)
    assert tuple(np.asarray(tokens)[0]) == best
    np.testing.assert_allclose(float(np.asarray(score)[0]), total.max(), rtol=1e-4)


def test_length_penalty_prefers_longer_finished_beams(model, batch):
    from t5pre.models.decoding import decode

    ids, mask = batch
    free, _ = decode(model, ids, mask, max_length=6, eos_id=-1)
    eos = int(np.asarray(free)[0, 1])
    short, _ = decode(model, ids, mask, max_length=6, method="beam", beam_size=4, alpha=0.0, eos_id=eos)
    long, _ = decode(model, ids, mask, max_length=6, method="beam", beam_size=4, alpha=3.0, eos_id=eos)
    def length(row):
        return int((row != 0).sum())
    short, long = np.asarray(short), np.asarray(long)
    assert all(length(long[r]) >= length(short[r]) for r in range(3))
    for row in np.concatenate([short, long]):  # pad only after an EOS
        hits = np.flatnonzero(row == eos)
        if len(hits):
            assert (row[hits[0] + 1:] == 0).all()


def test_sampling_is_seeded_and_respects_top_k(model, batch):
    from t5pre.models.decoding import decode

    ids, mask = batch
    a, _ = decode(model, ids, mask, max_length=6, method="sample", seed=5, eos_id=-1)
    b, _ = decode(model, ids, mask, max_length=6, method="sample", seed=5, eos_id=-1)
    c, _ = decode(model, ids, mask, max_length=6, method="sample", seed=6, eos_id=-1)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (np.asarray(a) != np.asarray(c)).any()
    greedy, _ = decode(model, ids, mask, max_length=6, eos_id=-1)
    one, _ = decode(model, ids, mask, max_length=6, method="sample", top_k=1, seed=3, eos_id=-1)
    np.testing.assert_array_equal(np.asarray(one), np.asarray(greedy))
    three, _ = decode(model, ids, mask, max_length=6, method="sample", top_k=3, top_p=0.9,
                      seed=3, eos_id=-1)
    three = np.asarray(three)
    logits = full_logits(model, ids, mask, three)
    top3 = np.argsort(-logits, axis=-1)[..., :3]
    assert (top3 == three[..., None]).any(-1).all()


def test_decoding_traces_in_tf_function_with_unknown_batch(model, batch):
    import tensorflow as tf

    from t5pre.models.decoding import decode

    ids, mask = batch
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def beam(ids, mask):
        return decode(model, ids, mask, max_length=6, method="beam", beam_size=2)

    traced, _ = beam(tf.constant(ids), tf.constant(mask))
    eager, _ = decode(model, ids, mask, max_length=6, method="beam", beam_size=2)
    np.testing.assert_array_equal(traced.numpy(), np.asarray(eager))


def test_generate_strings_to_strings(model):
    import io
    import random

    import sentencepiece as spm

    from t5pre.data.vocabulary import SentencePieceVocabulary
    from t5pre.models.decoding import decode, generate

    words = "the quick brown fox jumps over the lazy dog and a cat sleeps on a mat".split()
    rng = random.Random(0)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(" ".join(rng.choice(words) for _ in range(10)) for _ in range(200)),
        model_writer=buffer, vocab_size=40, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    vocabulary = SentencePieceVocabulary(buffer.getvalue(), extra_ids=4)
    texts = ["the quick fox", "a cat sleeps on the mat", "dog"]
    outputs = generate(model, vocabulary, texts, max_length=5, batch_size=2)
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)
    encoded = [vocabulary.encode(t) + [1] for t in texts]
    ids = np.zeros((3, max(map(len, encoded))), "int32")
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = e
    tokens, _ = decode(model, ids, (ids != 0).astype("int32"), max_length=5)
    assert outputs == [vocabulary.decode([int(t) for t in row]) for row in np.asarray(tokens)]


def test_bad_decoding_settings(model, batch):
    from t5pre.models.decoding import decode

    ids, mask = batch
    with pytest.raises(ConfigError, match="method"):
        decode(model, ids, mask, method="nucleus")
    with pytest.raises(ConfigError, match="beam_size"):
        decode(model, ids, mask, method="beam", beam_size=0)
    with pytest.raises(ConfigError, match="max_length"):
        decode(model, ids, mask, max_length=0)


# ---------------------------------------------------------------- the compiled fast path
@pytest.fixture(scope="module")
def eos_model():
    """A micro model that emits EOS (id 1) early in some rows and late or never in others:
    the lm-head columns of EOS and of a token the model picks at step 1 of row 0 swapped."""
    import keras

    from t5pre.models.decoding import decode
    from t5pre.models.t5 import T5Model

    keras.utils.set_random_seed(3)
    model = T5Model(T5Config(**MICRO))
    assert model.lm_head is not None
    ids, mask = eos_batch()
    free = np.asarray(decode(model, ids, mask, max_length=8, eos_id=-1)[0])
    token = int(free[0, 1])
    kernel = np.asarray(model.lm_head.kernel).copy()
    kernel[:, [1, token]] = kernel[:, [token, 1]]
    model.lm_head.kernel.assign(kernel)
    return model


def eos_batch():
    """Five rows (not a power of two) of different lengths: padding inside the batch."""
    rng = np.random.default_rng(4)
    lengths = [7, 3, 5, 1, 6]
    ids = np.zeros((5, 7), "int32")
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(3, 60, n)
    return ids, (ids != 0).astype("int32")


@pytest.mark.parametrize("method", ["greedy", "beam"])
@pytest.mark.parametrize("parts", [1, 2])
def test_compiled_decoder_gives_the_reference_tokens(eos_model, method, parts, monkeypatch):
    """`compile_decoder` (XLA on TensorFlow, jit on JAX; the batch whole, padded to 8 rows, or
    as two parts decoded at once, 3 + 2 rows padded to 4 + 2; width padded to 8) and the plain
    graph give the tokens of the reference: `decode` run op by op (and, for greedy, the
    uncached full-decoder loop), with padding in the batch and EOS early."""
    from t5pre.models import decoding
    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.decoding import compile_decoder, decode, uncached_greedy

    monkeypatch.setattr(decoding, "_CPU_THREADS", parts)
    assert decoding.decode_parts(5) == parts

    ids, mask = eos_batch()
    beam = 3 if method == "beam" else 1
    reference, reference_scores = decode(eos_model, ids, mask, max_length=8, method=method,
                                         beam_size=beam, alpha=0.6)
    reference = np.asarray(reference)
    ended = [(row == 1).any() and np.argmax(row == 1) < 7 for row in reference]
    assert any(ended) and not all(ended), reference  # EOS early in some rows, not in all
    if method == "greedy":
        np.testing.assert_array_equal(reference, uncached_greedy(eos_model, ids, mask, 8))
    for xla in (True, False):
        settings = DecodeSettings(beam_size=beam, max_decode_length=8, max_input_length=8,
                                  xla=xla)
        tokens, scores = compile_decoder(eos_model, settings)(ids, mask)
        assert tokens.shape == (5, 8) and scores.shape == (5,)
        np.testing.assert_array_equal(tokens, reference)
        np.testing.assert_allclose(scores, np.asarray(reference_scores), rtol=1e-4, atol=1e-5)
        # one row alone: padded to a batch of one, width 8
        alone, _ = compile_decoder(eos_model, settings)(ids[1:2, :3], mask[1:2, :3])
        np.testing.assert_array_equal(alone, reference[1:2])


def test_compiled_sampling_does_not_depend_on_the_padding(eos_model):
    """A sample is drawn per row and step, so padding the batch changes no row's samples:
    `compile_decoder` (batch padded to 8 rows) draws what `decode` draws, compiled the same way
    (TensorFlow's XLA draws other numbers than its graph kernels for a seed: both are checked
    against their own kind)."""
    import keras

    from t5pre.models.decode_settings import DecodeSettings
    from t5pre.models.decoding import compile_decoder, decode

    ids, mask = eos_batch()
    kwargs = dict(max_length=8, method="sample", top_k=20, temperature=1.5, seed=7)
    references = {False: decode(eos_model, ids, mask, **kwargs)[0]}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda i, m: decode(eos_model, i, m, **kwargs), jit_compile=True)
        references[True] = compiled(tf.constant(ids), tf.constant(mask))[0]
    else:
        references[True] = references[False]  # JAX: one generator, compiled or not
    for xla, reference in references.items():
        settings = DecodeSettings(sample=True, top_k=20, temperature=1.5, seed=7,
                                  max_decode_length=8, max_input_length=8, xla=xla)
        tokens, _ = compile_decoder(eos_model, settings)(ids, mask)
        np.testing.assert_array_equal(tokens, np.asarray(reference))


def test_empty_rows_decode_to_nothing(model, batch):
    from t5pre.models.decoding import decode

    ids, mask = batch
    ids = np.concatenate([ids, np.zeros_like(ids[:1])])
    mask = np.concatenate([mask, np.zeros_like(mask[:1])])
    for method in ("greedy", "beam"):
        tokens, scores = decode(model, ids, mask, max_length=6, method=method, beam_size=2)
        expected, _ = decode(model, ids[:-1], mask[:-1], max_length=6, method=method, beam_size=2)
        np.testing.assert_array_equal(np.asarray(tokens)[:-1], np.asarray(expected))
        assert (np.asarray(tokens)[-1] == 0).all() and float(np.asarray(scores)[-1]) == 0.0


def test_padded_shapes():
    from t5pre.models.decoding import padded_batch_size, padded_sizes, padded_width

    assert [padded_batch_size(n) for n in (1, 2, 3, 5, 8, 9, 32, 33)] == [1, 2, 4, 8, 8, 16, 32, 64]
    assert [padded_width(n) for n in (1, 8, 9, 12, 13, 17, 25, 100, 128, 129, 512)] == [
        8, 8, 12, 12, 16, 24, 32, 128, 128, 192, 512]
    assert padded_sizes(100, padded_width) == [8, 12, 16, 24, 32, 48, 64, 96, 128]
    assert padded_sizes(5, padded_batch_size) == [1, 2, 4, 8]
