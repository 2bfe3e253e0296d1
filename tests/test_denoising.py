"""Denoising objectives and chunking: exact T5 semantics, invariants over many seeds and lengths."""

import dataclasses
import types

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from t5pre.data import chunking, denoising  # noqa: E402
from t5pre.errors import ConfigError  # noqa: E402


@dataclasses.dataclass
class FakeVocab:
    """Just the vocabulary members the objectives use (T5 layout)."""

    vocab_size: int = 1100
    extra_ids: int = 100
    eos_id: int = 1

    def sentinel(self, i):
        return self.vocab_size - 1 - i

    def encode(self, text):
        return [3 + (ord(c) % 50) for c in text]


@dataclasses.dataclass
class FakeFeature:
    vocabulary: FakeVocab
    add_eos: bool = True


def make_ctx(inputs=64, targets=32, seed=0, vocab=None):
    vocab = vocab or FakeVocab()
    return types.SimpleNamespace(
        sequence_length={"inputs": inputs, "targets": targets},
        output_features={"inputs": FakeFeature(vocab), "targets": FakeFeature(vocab)},
        split="train", seed=seed, shuffle=False)


def run(objective, docs, ctx):
    ds = tf.data.Dataset.from_generator(
        lambda: ({"targets": np.asarray(d, np.int32)} for d in docs),
        output_signature={"targets": tf.TensorSpec([None], tf.int32)})
    return [{k: v.numpy() for k, v in ex.items()} for ex in objective(ds, ctx)]


# ------------------------------------------------------------------ length arithmetic ---------

def _half_even(x):
    """Round half to even, written independently of np.round."""
    floor = int(np.floor(x))
    frac = x - floor
    if frac > 0.5 or (frac == 0.5 and floor % 2 == 1):
        return floor + 1
    return floor


def _brute_inputs_targets(t, density, mean):
    noise = _half_even(float(np.float32(t) * np.float32(density)))
    noise = max(1, min(noise, t - 1))
    spans = _half_even(float(np.float32(noise) / np.float32(mean)))
    spans = max(1, min(spans, noise, t - noise))
    return t - noise + spans + 1, noise + spans + 1


def _t5_reference_helper(inputs_length, density, mean):
    """T5's published algorithm (float64 round, grow from inputs_length, the density-0.5 hack),
    written out independently from its description."""
    def lengths(t):
        noise = int(round(t * density))
        spans = int(round(noise / mean))
        return t - noise + spans + 1, noise + spans + 1

    t = inputs_length
    while lengths(t + 1)[0] <= inputs_length:
        t += 1
    inputs, targets = lengths(t)
    if density == 0.5 and targets > inputs:
        t, targets = t - 1, targets - 1
    return t, targets


def _brute_fit(inputs_length, targets_length, density, mean):
    """Largest chunk whose outputs fit by the mask's float32, clamped counts."""
    return max(t for t in range(2, 4 * inputs_length + 10)
               if _brute_inputs_targets(t, density, mean)[0] <= inputs_length
               and _brute_inputs_targets(t, density, mean)[1] <= targets_length)


def test_random_spans_helper_t5_values():
    assert denoising.random_spans_helper(512, 0.15, 3.0) == (568, 114)
    assert denoising.random_spans_helper(512, 0.5, 3.0) == (766, 512)
    # 568 raw tokens: 85 noise tokens in 28 spans.
    assert denoising.noise_counts(568, 0.15, 3.0) == (85, 28)
    # 30 * 0.15 = 4.5 in float32 rounds half to even -> 4.
    assert denoising.noise_counts(30, 0.15, 3.0)[0] == 4


@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.5, 3.0), (0.15, 32.0), (0.3, 1.0),
                                          (0.8, 2.0)])
def test_random_spans_helper_equals_t5(density, mean):
    for inputs_length in list(range(3, 600)) + [1024, 2048, 4096]:
        assert denoising.random_spans_helper(inputs_length, density, mean) == \
            _t5_reference_helper(inputs_length, density, mean), inputs_length


@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.5, 3.0), (0.15, 32.0), (0.8, 2.0)])
def test_pipeline_chunk_length_fits_and_starts_from_t5(density, mean):
    for inputs_length in list(range(8, 80)) + [114, 256, 512]:
        for targets_length in (inputs_length, 4 * inputs_length):
            t = denoising.span_corruption_tokens_length(inputs_length, targets_length, density,
                                                        mean)
            i_len, t_len = _brute_inputs_targets(t, density, mean)
            assert i_len <= inputs_length and t_len <= targets_length
            # Never longer than T5's chunk, and the largest fitting one at most.
            assert t <= denoising.random_spans_helper(inputs_length, density, mean)[0]
            assert t <= _brute_fit(inputs_length, targets_length, density, mean)
    # T5's lengths at density 0.5: T5's chunk exactly.
    assert denoising.span_corruption_tokens_length(512, 512, 0.5, 3.0) == 766


def test_random_spans_helper_too_short_and_bad_params():
    with pytest.raises(ConfigError, match="too short"):
        denoising.random_spans_helper(2, 0.15, 3.0)
    with pytest.raises(ConfigError, match="noise_density"):
        denoising.random_spans_helper(512, 1.5, 3.0)
    with pytest.raises(ConfigError, match="mean_noise_span_length"):
        denoising.random_spans_helper(512, 0.15, 0.0)


def test_tokens_length_fits_targets_too():
    # T5's setting: the inputs bind.
    assert denoising.span_corruption_tokens_length(512, 114, 0.15, 3.0) == 568
    # UL2 X (density 0.5): the targets bind and the chunk shrinks until both fit.
    t = denoising.span_corruption_tokens_length(512, 114, 0.5, 3.0)
    i_len, t_len = _brute_inputs_targets(t, 0.5, 3.0)
    assert i_len <= 512 and t_len <= 114 and _brute_inputs_targets(t + 1, 0.5, 3.0)[1] > 114


# ------------------------------------------------------------------ noise mask ----------------

def _spans(mask):
    mask = np.asarray(mask, bool)
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    return int(starts.sum())


LENGTHS = [2, 3, 4, 5, 10, 37, 100, 568, 5000]


@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.5, 3.0), (0.15, 32.0), (0.9, 1.0)])
def test_noise_mask_invariants(density, mean):
    for length in LENGTHS:
        num_noise, num_spans = denoising.noise_counts(length, density, mean)
        for seed in range(6):
            mask = denoising.random_spans_noise_mask(length, density, mean, [seed, length])
            assert mask.shape == (length,)
            assert mask.sum() == num_noise
            assert not mask[0], "T5 masks start with non-noise"
            assert mask[-1], "T5 masks end with noise"
            assert _spans(mask) == num_spans


def test_noise_mask_counts_are_exact_and_clamped():
    # round(length * density) exactly, also when spans would exceed the kept tokens.
    assert denoising.noise_counts(10, 0.9, 1.0) == (9, 1)
    assert denoising.noise_counts(2, 0.01, 3.0) == (1, 1)
    assert denoising.noise_counts(2, 0.99, 3.0) == (1, 1)
    assert denoising.noise_counts(1000, 0.5, 3.0) == (500, 167)
    assert denoising.noise_counts(100, 0.15, 3.0) == (15, 5)


def test_noise_mask_deterministic_and_seed_dependent():
    a = denoising.random_spans_noise_mask(200, 0.15, 3.0, [7, 8])
    b = denoising.random_spans_noise_mask(200, 0.15, 3.0, [7, 8])
    c = denoising.random_spans_noise_mask(200, 0.15, 3.0, [7, 9])
    assert (a == b).all()
    assert (a != c).any()


def test_span_lengths_are_a_uniform_composition():
    # 4 noise tokens in 2 spans -> (1,3), (2,2), (3,1) equally likely; length 6 keeps 2 tokens.
    counts = {}
    for seed in range(300):
        mask = denoising.random_spans_noise_mask(6, 4 / 6, 2.0, [seed, 1])
        first = int(np.argmax(mask))
        length = int(np.argmin(mask[first:])) if not mask[first:].all() else 6 - first
        counts[length] = counts.get(length, 0) + 1
    assert sorted(counts) == [1, 2, 3]
    assert all(60 <= c <= 140 for c in counts.values()), counts


def test_random_roll_keeps_noise_count_and_removes_start_bias():
    starts_with_noise = 0
    for seed in range(40):
        mask = denoising.random_spans_noise_mask(50, 0.3, 3.0, [seed, 0], random_roll=True)
        num_noise, num_spans = denoising.noise_counts(50, 0.3, 3.0)
        assert mask.sum() == num_noise
        assert _spans(mask) in (num_spans, num_spans + 1)
        starts_with_noise += bool(mask[0])
    assert 0 < starts_with_noise < 40


@pytest.mark.parametrize("roll", [False, True])
def test_batched_masks_have_the_same_semantics(roll):
    num_noise, num_spans = denoising.noise_counts(120, 0.15, 3.0)
    masks = denoising.random_spans_noise_masks(16, 120, 0.15, 3.0, [4, 2], random_roll=roll)
    assert masks.shape == (16, 120)
    assert (masks.sum(axis=1) == num_noise).all()
    for mask in masks:
        if roll:
            assert _spans(mask) in (num_spans, num_spans + 1)
        else:
            assert _spans(mask) == num_spans and not mask[0] and mask[-1]
    assert len({m.tobytes() for m in masks}) == 16  # rows are independent draws
    tokens = np.arange(16 * 120, dtype=np.int32).reshape(16, 120) % 1000
    inputs, targets = denoising.span_corrupt_batch(tokens, masks, 1100)
    for row in range(16):
        single_in, single_tg = denoising.span_corrupt(tokens[row], masks[row], 1100)
        assert inputs[row].tolist() == single_in.tolist()
        assert targets[row].tolist() == single_tg.tolist()


# ------------------------------------------------------------------ span corruption -----------

def _reconstruct(inputs, targets, vocab_size, num_sentinels):
    """Replace each sentinel in inputs by the tokens that follow it in targets."""
    sentinels = set(range(vocab_size - num_sentinels, vocab_size))
    spans, current = {}, None
    for tok in targets:
        if tok in sentinels:
            current = tok
            spans[current] = []
        else:
            spans[current].append(tok)
    out = []
    for tok in inputs:
        out.extend(spans[tok] if tok in sentinels else [tok])
    return out


def test_span_corrupt_reconstructs_and_orders_sentinels():
    rng = np.random.default_rng(0)
    vocab_size = 1100
    for length in [2, 3, 17, 100, 568]:
        for seed in range(5):
            tokens = rng.integers(0, 1000, size=length).astype(np.int32)  # 0 is a real token here
            for roll in (False, True):
                mask = denoising.random_spans_noise_mask(length, 0.15, 3.0, [seed, 3], roll)
                inputs, targets = (x.tolist() for x in
                                   denoising.span_corrupt(tokens, mask, vocab_size))
                assert _reconstruct(inputs, targets, vocab_size, 100) == tokens.tolist()
                sent_in = [t for t in inputs if t >= 1000]
                sent_tg = [t for t in targets if t >= 1000]
                n = _spans(mask)
                assert sent_in == sent_tg == list(range(vocab_size - 1, vocab_size - 1 - n, -1))
                assert targets[0] == vocab_size - 1
                assert len(targets) - n == int(mask.sum())


# A block of equal-length chunks is corrupted in one numpy call; shorter chunks in a block (the last
# of a pass) are grouped by length. Both are checked.
TAILS = {"full_chunks": [], "with_short_chunks": [[5, 6, 7], [9]]}


@pytest.mark.parametrize("tail", list(TAILS))
def test_span_corruption_preprocessor_end_to_end(tail):
    ctx = make_ctx(inputs=64, targets=20, seed=3)
    objective = denoising.span_corruption()
    length = objective.raw_tokens_length(ctx)
    assert length == denoising.random_spans_helper(64, 0.15, 3.0)[0]
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 1000, size=length).tolist() for _ in range(8)] + TAILS[tail]
    docs[1] = docs[0]  # identical chunks at different stream positions
    examples = run(objective, docs, ctx)
    assert len(examples) == len([d for d in docs if len(d) >= 2])  # 1-token chunks are dropped
    for ex, doc in zip(examples, docs):
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
        assert len(ex["inputs"]) <= 64 and len(ex["targets"]) <= 20
        assert _reconstruct(ex["inputs"][:-1].tolist(), ex["targets"][:-1].tolist(), 1100,
                            100) == doc
    # Full-length chunks fill the inputs exactly as the helper promises.
    assert len(examples[0]["inputs"]) == denoising._corrupted_lengths(length, 0.15, 3.0, 1, 1)[0]

    again = run(objective, docs, ctx)
    other = run(objective, docs, make_ctx(inputs=64, targets=20, seed=4))
    assert all((a["inputs"] == b["inputs"]).all() for a, b in zip(examples, again))
    assert any(len(a["inputs"]) != len(b["inputs"]) or (a["inputs"] != b["inputs"]).any()
               for a, b in zip(examples, other))
    # Identical chunks at different stream positions get different masks.
    assert examples[0]["inputs"].tolist() != examples[1]["inputs"].tolist()


@pytest.mark.parametrize("objective", [denoising.span_corruption(), denoising.prefix_lm(),
                                       denoising.iid_denoising(), denoising.span_corruption(0.5, 2)])
def test_objectives_fit_the_lengths_even_on_unchunked_documents(objective):
    ctx = make_ctx(inputs=40, targets=12)
    docs = [list(range(3, 503)), list(range(3, 50)), list(range(3, 500))]
    for ex in run(objective, docs, ctx):
        assert len(ex["inputs"]) <= 40 and len(ex["targets"]) <= 12
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1


def test_too_many_spans_is_refused():
    # UL2's dense X-denoiser at 512 needs ~128 sentinels: more than 100 extra ids.
    objective = denoising.span_corruption(0.5, 3.0)
    ctx = make_ctx(inputs=512, targets=512)
    assert objective.max_sentinels(ctx) > 100
    with pytest.raises(ConfigError, match="extra_ids"):
        run(objective, [[5] * 10], ctx)
    roomy = make_ctx(inputs=512, targets=512, vocab=FakeVocab(vocab_size=1200, extra_ids=200))
    out = run(objective, [list(range(3, 700))], roomy)
    assert min(out[0]["inputs"].min(), out[0]["targets"].min()) >= 0
    assert out[0]["targets"].max() == 1199


# ------------------------------------------------------------------ other objectives ----------

@pytest.mark.parametrize("tail", list(TAILS))
def test_prefix_lm_invariants(tail):
    ctx = make_ctx(inputs=30, targets=12, seed=1)
    objective = denoising.prefix_lm()
    length = objective.raw_tokens_length(ctx)
    assert length == 29
    rng = np.random.default_rng(2)
    docs = [rng.integers(0, 1000, size=length).tolist() for _ in range(20)]
    docs += [d for d in TAILS[tail] if len(d) >= 2]
    splits = set()
    for ex, doc in zip(run(objective, docs, ctx), docs):
        inputs, targets = ex["inputs"].tolist(), ex["targets"].tolist()
        assert inputs[-1] == 1 and targets[-1] == 1
        assert len(inputs) <= 30 and len(targets) <= 12
        assert len(inputs) >= 2 and len(targets) >= 2  # both sides non-empty
        assert inputs[:-1] + targets[:-1] == doc
        splits.add(len(inputs))
    assert len(splits) > 3


@pytest.mark.parametrize("tail", list(TAILS))
def test_iid_denoising_invariants(tail):
    ctx = make_ctx(inputs=400, targets=400, seed=5)
    objective = denoising.iid_denoising()
    length = objective.raw_tokens_length(ctx)
    rng = np.random.default_rng(3)
    docs = [rng.integers(3, 1000, size=length).tolist() for _ in range(50 - len(TAILS[tail]))]
    docs += TAILS[tail]
    changed = masked = 0
    for ex, doc in zip(run(objective, docs, ctx), docs):
        inputs, targets = ex["inputs"], ex["targets"]
        assert targets.tolist() == doc + [1]
        assert len(inputs) == len(targets)
        diff = inputs[:-1] != np.asarray(doc)
        changed += diff.sum()
        masked += (inputs == 1099).sum()
        # Replacements are the mask token or regular pieces, never pad/EOS/UNK/other sentinels.
        replaced = inputs[:-1][diff]
        assert ((replaced == 1099) | ((replaced >= 3) & (replaced < 1000))).all()
    total = sum(len(d) for d in docs)
    assert 0.11 * total < changed < 0.16 * total  # 0.15 selected, ~1/10 of those kept as is
    assert 0.75 < masked / changed < 0.95


def test_ul2_denoisers_and_paradigm_prefixes():
    denoisers = denoising.ul2_denoisers()
    assert [d.name for d in denoisers] == ["r", "x_long_spans", "x_dense", "s"]
    assert abs(sum(d.rate for d in denoisers) - 1.0) < 1e-9
    ctx = make_ctx(inputs=64, targets=64, seed=0)
    rng = np.random.default_rng(4)
    for d in denoisers:
        prefix = FakeVocab().encode(denoising.UL2_PARADIGM_PREFIXES[
            {"r": "R", "x_long_spans": "X", "x_dense": "X", "s": "S"}[d.name]])
        length = d.objective.raw_tokens_length(ctx)
        docs = [rng.integers(3, 1000, size=length).tolist() for _ in range(3)]
        for ex in run(d.objective, docs, ctx):
            assert ex["inputs"][: len(prefix)].tolist() == prefix
            assert len(ex["inputs"]) <= 64 and len(ex["targets"]) <= 64
    plain = denoising.ul2_denoisers(paradigm_prefixes=False)
    assert all(d.objective.prefix is None for d in plain)


def test_make_objective_errors():
    assert isinstance(denoising.make_objective("prefix_lm"), denoising.PrefixLM)
    with pytest.raises(ConfigError, match="unknown objective"):
        denoising.make_objective("mlm")
    with pytest.raises(ConfigError, match="sequence_length"):
        denoising.span_corruption().raw_tokens_length(types.SimpleNamespace(sequence_length=None))


# ------------------------------------------------------------------ chunking ------------------

def test_chunks_have_exact_lengths_and_lose_nothing():
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 50, size=n).astype(np.int32) for n in rng.integers(0, 40, size=60)]
    ds = tf.data.Dataset.from_generator(
        lambda: ({"targets": d, "text": "raw"} for d in docs),
        output_signature={"targets": tf.TensorSpec([None], tf.int32),
                          "text": tf.TensorSpec([], tf.string)})
    stream = np.concatenate(docs)
    for length in [1, 7, 568]:
        chunks = [c["targets"].numpy() for c in chunking.concatenate_and_split(ds, length)]
        assert all(len(c) == length for c in chunks[:-1]) and 0 < len(chunks[-1]) <= length
        assert np.array_equal(np.concatenate(chunks), stream)
        dropped = [c["targets"].numpy() for c in
                   chunking.concatenate_and_split(ds, length, keep_remainder=False)]
        assert all(len(c) == length for c in dropped)
        assert len(dropped) == len(stream) // length
    separated = [c["targets"].numpy() for c in
                 chunking.concatenate_and_split(ds, 9, document_separator_id=4)]
    expected = np.concatenate([np.append(d, 4) for d in docs])
    assert np.array_equal(np.concatenate(separated), expected)


def test_split_into_chunks_uses_the_objective_length():
    ctx = make_ctx(inputs=64, targets=20)
    objective = denoising.span_corruption()
    ds = tf.data.Dataset.from_tensor_slices({"targets": tf.zeros([10, 50], tf.int32)})
    chunks = list(chunking.split_into_chunks(objective)(ds, ctx))
    length = objective.raw_tokens_length(ctx)
    assert [int(tf.size(c["targets"])) for c in chunks] == [length] * (500 // length) + [500 % length]
    with pytest.raises(ConfigError):
        chunking.split_into_chunks(0)(ds, ctx)


def test_chunking_refuses_examples_without_1d_tokens():
    from t5pre.errors import DataError

    ds = tf.data.Dataset.from_tensors({"text": tf.constant("raw text")})
    with pytest.raises(DataError, match="targets"):
        chunking.concatenate_and_split(ds, 8)
    ds = tf.data.Dataset.from_tensors({"targets": tf.zeros([2, 3], tf.int32)})
    with pytest.raises(DataError, match="1-D"):
        chunking.concatenate_and_split(ds, 8)
