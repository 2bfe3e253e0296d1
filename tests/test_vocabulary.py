"""SentencePieceVocabulary: T5 id layout, in-proto sentinels, Python/TF parity, training, errors."""

import os

import pytest

from t5pre.data.vocabulary import (
    SentencePieceVocabulary,
    default_vocabulary,
    default_vocabulary_path,
    load_vocabulary,
    train_vocabulary,
)
from t5pre.errors import DataError

TEXT = "this is a test <extra_id_3> with <extra_id_0> at the end"


@pytest.fixture(scope="module")
def tiny_model_path(shared_data):
    return str(shared_data / "spm" / "seqio_test_sentencepiece.model")


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return SentencePieceVocabulary(tiny_model_path, extra_ids=10)


def test_extra_id_layout_on_a_model_without_sentinels(tiny):
    # 26 pieces in the file + 10 sentinels appended in memory, <extra_id_0> last.
    assert tiny.vocab_size == 36
    assert tiny.num_base_pieces == 26
    assert (tiny.pad_id, tiny.eos_id, tiny.unk_id) == (0, 1, 2)
    assert tiny.sentinel(0) == 35 and tiny.sentinel(9) == 26
    for i in range(10):
        assert tiny.id_to_piece(tiny.sentinel(i)) == f"<extra_id_{i}>"
    assert tiny.is_sentinel(26) and tiny.is_sentinel(35) and not tiny.is_sentinel(25)
    with pytest.raises(DataError, match="10 extra ids"):
        tiny.sentinel(10)


def test_sentinel_text_round_trips_in_python(tiny):
    ids = tiny.encode(TEXT)
    assert tiny.sentinel(3) in ids and tiny.sentinel(0) in ids
    assert tiny.unk_id not in [ids[ids.index(tiny.sentinel(3))]]
    assert tiny.decode(ids) == TEXT


def test_python_and_tensorflow_agree(tiny):
    import tensorflow as tf

    texts = [TEXT, "what a test: <extra_id_9>", ""]
    ragged = tiny.encode_tf(tf.constant(texts))
    assert isinstance(ragged, tf.RaggedTensor) and ragged.dtype == tf.int32
    assert ragged.to_list() == [tiny.encode(t) for t in texts]
    scalar = tiny.encode_tf(tf.constant(TEXT))
    assert scalar.shape.rank == 1 and scalar.numpy().tolist() == tiny.encode(TEXT)
    decoded = tiny.decode_tf(ragged).numpy().tolist()
    assert [d.decode() for d in decoded] == [tiny.decode(tiny.encode(t)) for t in texts]


def test_encode_decode_inside_tf_function_and_dataset(tiny):
    import tensorflow as tf

    @tf.function
    def round_trip(x):
        return tiny.decode_tf(tiny.encode_tf(x))

    assert round_trip(tf.constant(TEXT)).numpy().decode() == TEXT
    ds = tf.data.Dataset.from_tensor_slices([TEXT, "a test <extra_id_1>"]).map(tiny.encode_tf)
    assert [x.tolist() for x in ds.as_numpy_iterator()] == [tiny.encode(TEXT), tiny.encode("a test <extra_id_1>")]


def test_decode_stops_at_eos_and_drops_padding(tiny):
    import tensorflow as tf

    a, s = tiny.encode("test"), tiny.sentinel(2)
    ids = [0] + a + [s] + [1] + tiny.encode("what") + [0, 0]
    assert tiny.decode(ids) == "test <extra_id_2>"  # a sentinel reads as seqio's "▁<extra_id_2>"
    batch = tf.constant([ids, [0] * len(ids)])
    assert tiny.decode_tf(batch).numpy().tolist() == [b"test <extra_id_2>", b""]
    # ids beyond the vocabulary (a padded embedding) decode as unk in both worlds
    assert tiny.decode(a + [40]) == tiny.decode(a + [tiny.unk_id])
    assert tiny.decode_tf(tf.constant(a + [40])).numpy().decode() == tiny.decode(a + [40])


def test_save_and_load_restore_the_same_vocabulary(tiny, tmp_path):
    tiny.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["spiece.model", "vocab.json"]
    restored = load_vocabulary(tmp_path)
    assert restored == tiny and restored.vocab_size == 36 and restored.extra_ids == 10
    # the saved file contains the sentinels: used as is, no second set appended
    as_is = SentencePieceVocabulary(str(tmp_path / "spiece.model"), extra_ids=10)
    assert as_is.vocab_size == 36 and as_is.encode(TEXT) == tiny.encode(TEXT)
    with pytest.raises(DataError, match="already contains 10 <extra_id_"):
        SentencePieceVocabulary(str(tmp_path / "spiece.model"), extra_ids=100)
    (tmp_path / "vocab.json").write_text('{"extra_ids": 10, "vocab_size": 99}')
    with pytest.raises(DataError, match="vocab_size=99"):
        load_vocabulary(tmp_path)
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(DataError, match="vocab.json: not valid JSON"):
        load_vocabulary(tmp_path)


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(DataError, match=r"nope\.model: SentencePiece model file not found"):
        SentencePieceVocabulary(str(missing))
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"\x00\xffthis is not a protobuf at all" * 10)
    with pytest.raises(DataError, match=r"corrupt\.model: not a SentencePiece model"):
        SentencePieceVocabulary(str(corrupt))
    with pytest.raises(DataError, match="is a directory"):
        SentencePieceVocabulary(str(tmp_path))


def test_models_not_in_t5_layout_are_refused(tiny_model_path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(open(tiny_model_path, "rb").read())
    proto.trainer_spec.bos_id = 3
    with pytest.raises(DataError, match="bos_id=3"):
        SentencePieceVocabulary(proto.SerializeToString())
    proto.ParseFromString(open(tiny_model_path, "rb").read())
    proto.pieces[5].piece = "<extra_id_0>"  # a sentinel that is not the last id
    with pytest.raises(DataError, match=r"<extra_id_0> is at id 5"):
        SentencePieceVocabulary(proto.SerializeToString(), extra_ids=1)


@pytest.fixture(scope="module")
def austen_lines(shared_data):
    path = sorted((shared_data / "pretrain" / "jane_austen").glob("*.txt"))[0]
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:3000]


def test_train_vocabulary_t5_layout_and_byte_fallback(austen_lines, tmp_path):
    vocab = train_vocabulary(austen_lines, tmp_path / "small", vocab_size=820, extra_ids=20)
    assert vocab.path == str(tmp_path / "small.model")
    assert os.listdir(tmp_path) == ["small.model"]  # written by rename: no temp file left
    assert (vocab.vocab_size, vocab.num_base_pieces, vocab.extra_ids) == (820, 800, 20)
    assert vocab.sentinel(0) == 819 and vocab.id_to_piece(800) == "<extra_id_19>"
    assert [vocab.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    # byte fallback: characters never seen in training are bytes, not <unk>, and round-trip
    text = "Mr. Darcy wrote 漢字 — naïve <extra_id_4>"
    ids = vocab.encode(text)
    assert vocab.unk_id not in ids and vocab.sentinel(4) in ids
    assert vocab.decode(ids) == text
    # learnt pieces compress English: fewer tokens than characters
    sample = " ".join(austen_lines[:50])
    assert len(vocab.encode(sample)) < len(sample) / 2.5, len(vocab.encode(sample))
    # reloaded from disk, it is the same vocabulary (sentinels found in the file)
    assert SentencePieceVocabulary(str(tmp_path / "small.model"), extra_ids=20) == vocab


def test_train_vocabulary_refuses_bad_sizes_and_empty_text(austen_lines, tmp_path):
    with pytest.raises(DataError, match="counts the extra ids"):
        train_vocabulary(austen_lines, tmp_path / "v", vocab_size=100, extra_ids=100)
    with pytest.raises(DataError, match="no text"):
        train_vocabulary(["", "  \n "], tmp_path / "v", vocab_size=400, extra_ids=0)
    assert not (tmp_path / "v.model").exists()


def test_shipped_default_vocabulary():
    vocab = default_vocabulary()
    assert os.path.getsize(default_vocabulary_path()) < 400_000
    assert (vocab.vocab_size, vocab.extra_ids, vocab.num_base_pieces) == (4100, 100, 4000)
    assert vocab.sentinel(0) == 4099 and vocab.sentinel(99) == 4000
    text = "Return a new list containing all items from the iterable in ascending order."
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert len(ids) < 20  # trained on docstrings: common words are single pieces
    assert default_vocabulary() is vocab


def test_tf_tokenizer_survives_kernel_cache_clears():
    """tf.random.set_seed clears TF's kernel cache; tensorflow-text's kernel-owned model resource
    used to die with it, breaking every later pipeline of a cached vocabulary."""
    import tensorflow as tf

    from t5pre.data.vocabulary import default_vocabulary

    vocab = default_vocabulary()
    texts = ["hello world <extra_id_0>", "a b c"]
    expected = [vocab.encode(t) for t in texts]
    for seed in (1, 2):
        tf.random.set_seed(seed)
        got = [x.numpy().tolist() for x in tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)]
        assert got == expected
        assert vocab.decode_tf(tf.constant(expected[1] + [1])).numpy().decode() == "a b c"
