"""Metrics against values worked out by hand (see the comment beside each expected number)."""

import numpy as np
import pytest

from t5pre.errors import DataError
from t5pre.evaluation import metrics


# ---------------------------------------------------------------------------------------------
# SQuAD
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple, a  pear  ", "apple pear"),
        ("theatre another", "theatre another"),  # articles only as whole words
        ("the-end", "theend"),  # punctuation removed before articles are matched
        ("Straße ÜBER", "straße über"),  # unicode lower-casing
        ("“Paris”", "“paris”"),  # only ASCII punctuation is removed (as in the official script)
        ("", ""),
    ],
)
def test_normalize_squad_answer(text, normalised):
    assert metrics.normalize_squad_answer(text) == normalised


def test_squad_perfect_match_after_normalisation():
    assert metrics.squad(["Eiffel Tower"], ["the eiffel tower."]) == {"em": 100.0, "f1": 100.0}


def test_squad_partial_overlap():
    # pred "in paris france" (3 tokens) vs gold "paris": P = 1/3, R = 1, F1 = 0.5
    assert metrics.squad(["Paris"], ["in Paris, France"]) == {"em": 0.0, "f1": pytest.approx(50.0)}


def test_squad_takes_best_of_several_gold_answers_independently():
    # "big red dog" vs "dog": P 1/3, R 1 -> 0.5; vs "big red dog house": P 1, R 3/4 -> 6/7.
    result = metrics.squad([["dog", "big red dog house"]], ["Big red dog"])
    assert result["em"] == 0.0
    assert result["f1"] == pytest.approx(100.0 * 6 / 7)
    # One of the gold answers matches exactly -> EM 1 even though the first does not.
    assert metrics.squad([["red dog", "big red dog!"]], ["big red dog"]) == {"em": 100.0, "f1": 100.0}


def test_squad_empty_prediction_and_empty_reference():
    assert metrics.squad(["Paris"], [""]) == {"em": 0.0, "f1": 0.0}
    assert metrics.squad([""], ["Paris"]) == {"em": 0.0, "f1": 0.0}
    # Both normalise to nothing: exact match, but v1.1's F1 counts no shared token -> 0.
    assert metrics.squad(["the"], ["a"]) == {"em": 100.0, "f1": 0.0}


def test_squad_unicode():
    assert metrics.squad(["Ünïcödé Straße"], ["ünïcödé straße"]) == {"em": 100.0, "f1": 100.0}
    # Curly quotes are not ASCII punctuation: the token differs, as in the official script.
    assert metrics.squad(["Paris"], ["“Paris”"]) == {"em": 0.0, "f1": 0.0}
    # "東京 タワー" vs "東京": P 1/2, R 1 -> 2/3
    assert metrics.squad(["東京"], ["東京 タワー"])["f1"] == pytest.approx(100.0 * 2 / 3)


def test_metrics_accept_utf8_bytes_from_tf_data():
    assert metrics.squad([[b"Stra\xc3\x9fe"]], [b"strasse".replace(b"ss", b"\xc3\x9f")])["em"] == 100.0
    assert metrics.rouge([b"the cat"], [b"the cat"])["rouge1"] == pytest.approx(100.0)


def test_squad_averages_over_examples():
    # EM (1 + 0) / 2 = 50; F1 (1 + 0.5) / 2 = 75
    result = metrics.squad([["Eiffel Tower"], "Paris"], ["eiffel tower", "in Paris, France"])
    assert result == {"em": 50.0, "f1": pytest.approx(75.0)}


def test_squad_rejects_mismatched_counts_and_bad_types():
    with pytest.raises(DataError, match="2 targets but 1 predictions"):
        metrics.squad(["a", "b"], ["a"])
    with pytest.raises(DataError, match="empty list of references"):
        metrics.squad([[]], ["a"])
    with pytest.raises(DataError, match="prediction 0 is int"):
        metrics.squad(["a"], [1])
    with pytest.raises(DataError, match="a reference of example 0 is NoneType"):
        metrics.squad([["a", None]], ["a"])
    with pytest.raises(DataError, match="no examples"):
        metrics.squad([], [])


def test_exact_match_is_verbatim():
    assert metrics.exact_match(["yes", ["no", "maybe"], "Yes"], ["yes", "maybe", "yes"]) == {
        "exact_match": pytest.approx(200.0 / 3)
    }


# ---------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------

REFERENCE = "the cat sat on the mat"
PREDICTION = "the cat sat on a mat"


def test_rouge_hand_checked_single_example():
    result = metrics.rouge([REFERENCE], [PREDICTION])
    # unigrams: the(1 of 2), cat, sat, on, mat -> 5 of 6 on both sides -> F 5/6
    assert result["rouge1"] == pytest.approx(100 * 5 / 6)
    # bigrams: the-cat, cat-sat, sat-on shared, 3 of 5 on both sides -> F 0.6
    assert result["rouge2"] == pytest.approx(60.0)
    # LCS "the cat sat on mat" = 5 tokens of 6 -> 5/6
    assert result["rougeL"] == pytest.approx(100 * 5 / 6)
    assert result["rougeLsum"] == pytest.approx(100 * 5 / 6)
    # One example: every bootstrap resample is that example, so the interval collapses.
    for key in metrics.DEFAULT_ROUGE_KEYS:
        assert result[f"{key}_low"] == pytest.approx(result[key])
        assert result[f"{key}_high"] == pytest.approx(result[key])


def test_rouge_perfect_and_empty():
    perfect = metrics.rouge([REFERENCE], [REFERENCE])
    assert all(perfect[key] == pytest.approx(100.0) for key in metrics.DEFAULT_ROUGE_KEYS)
    empty_prediction = metrics.rouge([REFERENCE], [""])
    assert all(empty_prediction[key] == 0.0 for key in metrics.DEFAULT_ROUGE_KEYS)
    empty_reference = metrics.rouge([""], [PREDICTION])
    assert all(empty_reference[key] == 0.0 for key in metrics.DEFAULT_ROUGE_KEYS)


def test_rouge_uses_the_porter_stemmer_like_t5():
    # "cats" stems to "cat": all 3 unigrams match with stemming, 2 of 3 without.
    assert metrics.rouge(["the cats sat"], ["the cat sat"])["rouge1"] == pytest.approx(100.0)
    plain = metrics.rouge(["the cats sat"], ["the cat sat"], use_stemmer=False)
    assert plain["rouge1"] == pytest.approx(100 * 2 / 3)


def test_rouge_lsum_splits_sentences_on_space_dot_space():
    reference = "one two three . four five six"
    prediction = "four five six . one two three"
    split = metrics.rouge([reference], [prediction])
    # Over the whole text the LCS is one sentence (3 of 6 tokens) -> 50.
    assert split["rougeL"] == pytest.approx(50.0)
    # Sentence by sentence each reference sentence is found whole in the prediction -> 100.
    assert split["rougeLsum"] == pytest.approx(100.0)
    unsplit = metrics.rouge([reference], [prediction], split_sentences=False)
    assert unsplit["rougeLsum"] == pytest.approx(50.0)
    assert metrics.split_sentences_for_rouge_lsum(reference) == "one two three .\nfour five six"


def test_rouge_takes_the_best_of_several_references():
    result = metrics.rouge([["completely different words", REFERENCE]], [PREDICTION])
    assert result["rouge1"] == pytest.approx(100 * 5 / 6)
    assert result["rouge2"] == pytest.approx(60.0)


def test_rouge_unicode_outside_ascii_is_dropped_by_the_rouge_tokenizer():
    # rouge_score keeps [a-z0-9] only: "café" becomes "caf"; "naïve" becomes "na ve".
    result = metrics.rouge(["café au lait"], ["café au lait"])
    assert result["rouge1"] == pytest.approx(100.0)
    assert metrics.rouge(["東京"], ["東京"])["rouge1"] == 0.0


def _varied_examples():
    references = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(12)]
    predictions = [" ".join(ref.split()[: 2 + i % 7]) for i, ref in enumerate(references)]
    return references, predictions


def test_rouge_bootstrap_interval_contains_mid_and_is_reproducible():
    references, predictions = _varied_examples()
    first = metrics.rouge(references, predictions, seed=7)
    again = metrics.rouge(references, predictions, seed=7)
    other = metrics.rouge(references, predictions, seed=8)
    assert first == again
    for key in metrics.DEFAULT_ROUGE_KEYS:
        assert first[f"{key}_low"] < first[key] < first[f"{key}_high"]
    assert any(first[k] != other[k] for k in first)
    # mid is the median of bootstrap means: close to the plain mean of per-example scores.
    per_example = [metrics.rouge([r], [p])["rouge1"] for r, p in zip(references, predictions)]
    assert first["rouge1"] == pytest.approx(np.mean(per_example), abs=2.0)


def test_rouge_leaves_the_global_numpy_random_state_alone():
    np.random.seed(123)
    expected = np.random.random_sample(3)
    np.random.seed(123)
    references, predictions = _varied_examples()
    metrics.rouge(references, predictions, bootstrap_samples=50)
    np.testing.assert_array_equal(np.random.random_sample(3), expected)


def test_rouge_rejects_bad_input():
    with pytest.raises(DataError, match="unknown score keys"):
        metrics.rouge(["a"], ["a"], score_keys=["bleu"])
    with pytest.raises(DataError, match="1 targets but 2 predictions"):
        metrics.rouge(["a"], ["a", "b"])
    with pytest.raises(DataError, match="lists of strings"):
        metrics.rouge("a", "a")


def test_get_metric():
    assert metrics.get_metric("squad") is metrics.squad
    with pytest.raises(DataError, match="known metrics: exact_match, rouge, squad"):
        metrics.get_metric("bleu")
