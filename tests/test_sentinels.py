"""Text with sentinels: t5pre encodes as Hugging Face's T5 tokenizer and decodes as seqio, in Python,
tensorflow-text (tf.data and the SavedModel) and the Hugging Face export's tokenizer.json.

The rule (t5pre/data/vocabulary.py's docstring): every `<extra_id_i>` is split off the text, the
text between sentinels is encoded on its own, a sentinel decodes as SentencePiece decodes seqio's
piece "▁<extra_id_i>". References built here: Hugging Face's `T5Tokenizer` over a plain
`spiece.model` (no sentinels inside, like real T5's) and seqio's model (that file + user-defined
pieces "▁<extra_id_i>" appended in reverse, as seqio's `vocabularies.py` builds it), read with
plain `sentencepiece`. Two vocabularies: the shipped default (its file holds the sentinels spelt
"<extra_id_i>", as every t5pre model directory so far; byte fallback) and a small model trained
here without byte fallback (transformers 5's T5Tokenizer has none) on text with non-ASCII words.
"""

import io
import json
import os
import random
import re
import subprocess
import sys
import textwrap

import pytest

from t5pre.data.vocabulary import (
    SentencePieceVocabulary,
    _model_proto_module,
    default_vocabulary,
    default_vocabulary_path,
    load_vocabulary,
)

transformers = pytest.importorskip("transformers")

EXTRA_IDS = 100
# Sentinels between spaces or at either end of the text: seqio gives Hugging Face's ids too.
SPACED = [
    "the dog <extra_id_0> in",
    "<extra_id_0> start",
    "end <extra_id_1>",
    "a <extra_id_0> <extra_id_1> b",
    "  the  dog  <extra_id_0>  in  ",
    "<extra_id_0>",
    "the quick <extra_id_0> fox jumps over <extra_id_1> dog <extra_id_99>",
]
# Sentinels glued to text or to each other: seqio spells the sentinel out or keeps no "▁" on the
# next word; t5pre follows Hugging Face.
GLUED = [
    "dog<extra_id_0>in",
    "a <extra_id_0><extra_id_1> b",
    "Hello <extra_id_0>.",
    "and <extra_id_0>ly x",
]
OTHER = [
    "x<extra_id_100>y <extra_id_07> <extra_id_0",  # not sentinels: plain text
    "",
    "   ",
    "plain text only",
    "\uff54\uff48\uff45 dog <extra_id_0> \uff49\uff4e",  # fullwidth letters, NFKC-normalised
]
UNICODE = [
    "café <extra_id_0> naïve 日本 <extra_id_2> über",
    "日本<extra_id_3>語 straße<extra_id_4> ñandú",
]
ASCII_TEXTS = SPACED + GLUED + OTHER
ALL_TEXTS = ASCII_TEXTS + UNICODE

WORDS = ("the dog in start end a b quick fox jumps over Hello and ly x y plain text only café "
         "naïve 日本 語 über straße ñandú . < > _ 0 1 7 extra id").split()


# ----------------------------------------------------------------------------------- helpers
def proto_of(data: bytes):
    proto = _model_proto_module().ModelProto()
    proto.ParseFromString(data)
    return proto


def without_sentinels(data: bytes, count: int) -> bytes:
    proto = proto_of(data)
    del proto.pieces[len(proto.pieces) - count:]
    return proto.SerializeToString()


def seqio_model(base: bytes, extra_ids: int) -> bytes:
    """seqio's SentencePieceVocabulary model: user-defined "▁<extra_id_i>" appended, reversed."""
    pb = _model_proto_module()
    proto = proto_of(base)
    for i in reversed(range(extra_ids)):
        proto.pieces.add(piece=f"\u2581<extra_id_{i}>", score=0.0,
                         type=pb.ModelProto.SentencePiece.USER_DEFINED)
    return proto.SerializeToString()


def processor(data: bytes):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(data)
    return sp


def hf_t5_tokenizer(base: bytes, directory):
    """Hugging Face's T5Tokenizer over a T5-style directory holding only spiece.model."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(base)
    return transformers.T5Tokenizer.from_pretrained(str(directory))


def train_base_model() -> bytes:
    import sentencepiece as spm

    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400)]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=120, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, model_type="unigram", hard_vocab_limit=False,
        character_coverage=1.0, byte_fallback=False, minloglevel=2)
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module", params=["default", "trained"])
def case(request, tmp_path_factory):
    """(vocabulary, base spiece.model bytes without sentinels, texts HF can compare, HF tokenizer)."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "default":
        vocabulary = default_vocabulary()
        base = without_sentinels(open(default_vocabulary_path(), "rb").read(), EXTRA_IDS)
        texts = ASCII_TEXTS  # byte-fallback characters would be <unk> in HF's T5Tokenizer
    else:
        base = train_base_model()
        vocabulary = SentencePieceVocabulary(base, extra_ids=EXTRA_IDS)
        texts = ALL_TEXTS
    return vocabulary, base, texts, hf_t5_tokenizer(base, root / "hf")


# ------------------------------------------------------------------------------------- tests
def test_encode_is_hugging_faces_in_python_and_tensorflow(case):
    import tensorflow as tf

    vocabulary, _, texts, hf = case
    expected = [hf(text)["input_ids"] for text in texts]
    assert [vocabulary.encode(t) + [vocabulary.eos_id] for t in texts] == expected
    # no stray "▁" (the old t5pre ids): "the dog <extra_id_0> in" is ... g, <extra_id_0>, ▁in
    ids = vocabulary.encode("the dog <extra_id_0> in")
    at = ids.index(vocabulary.sentinel(0))
    assert vocabulary.id_to_piece(ids[at - 1]) != "\u2581" and ids[at + 1:] == vocabulary.encode("in")
    assert vocabulary.encode("dog<extra_id_0>in") == (
        vocabulary.encode("dog") + [vocabulary.sentinel(0)] + vocabulary.encode("in"))
    # tensorflow-text: a batch, a scalar, a 2-D batch, inside tf.data
    assert vocabulary.encode_tf(tf.constant(texts)).to_list() == [e[:-1] for e in expected]
    for text, want in zip(texts, expected):
        assert vocabulary.encode_tf(tf.constant(text)).numpy().tolist() == want[:-1], text
    grid = vocabulary.encode_tf(tf.constant([texts[:2], texts[2:4]])).to_list()
    assert grid == [[e[:-1] for e in expected[:2]], [e[:-1] for e in expected[2:4]]]
    mapped = tf.data.Dataset.from_tensor_slices(texts).map(vocabulary.encode_tf)
    assert [x.tolist() for x in mapped.as_numpy_iterator()] == [e[:-1] for e in expected]


def test_decode_is_seqios_and_round_trips(case):
    import tensorflow as tf

    vocabulary, base, texts, hf = case
    seqio = processor(seqio_model(base, EXTRA_IDS))
    rows = [vocabulary.encode(t) for t in texts]
    decoded = [vocabulary.decode(ids) for ids in rows]
    assert decoded == [seqio.DecodeIds(ids) for ids in rows]
    width = max(len(r) for r in rows)
    batch = tf.constant([r + [vocabulary.eos_id] + [0] * (width - len(r)) for r in rows])
    assert [s.decode() for s in vocabulary.decode_tf(batch).numpy()] == decoded
    assert vocabulary.decode(vocabulary.encode("the dog <extra_id_0> in")) == "the dog <extra_id_0> in"
    assert vocabulary.decode(vocabulary.encode("dog<extra_id_0>in")) == "dog <extra_id_0> in"
    for text, ids, back in zip(texts, rows, decoded):
        assert vocabulary.encode(back) == ids, text  # decoding then encoding gives the ids back
    if int(transformers.__version__.split(".")[0]) >= 5:
        # transformers 5 (tokenizers-based) writes no space before a sentinel; nothing else differs
        for ids, ours in zip(rows, decoded):
            assert hf.decode(ids) == re.sub(r" (<extra_id_(?:\d|[1-9]\d)>)", r"\1", ours)


def test_seqio_gives_the_same_ids_where_sentinels_stand_between_spaces(case):
    vocabulary, base, _, _ = case
    model = seqio_model(base, EXTRA_IDS)
    assert proto_of(vocabulary.tokenizer_model) == proto_of(model)  # seqio's model, piece for piece
    seqio = processor(model)
    for text in SPACED + ["plain text only", ""]:
        assert vocabulary.encode(text) == seqio.EncodeAsIds(text), text
    for text in GLUED:  # where seqio and Hugging Face differ, t5pre is Hugging Face's
        assert vocabulary.encode(text) != seqio.EncodeAsIds(text), text


def test_model_files_with_either_spelling_or_none_give_the_same_vocabulary(tmp_path):
    """Existing model directories (sentinels spelt <extra_id_i>), seqio-spelt files and T5-style
    files without sentinels load to the same ids; text without sentinels keeps its old ids."""
    old_file = open(default_vocabulary_path(), "rb").read()
    base = without_sentinels(old_file, EXTRA_IDS)
    from_old = SentencePieceVocabulary(default_vocabulary_path(), extra_ids=EXTRA_IDS)
    from_seqio = SentencePieceVocabulary(seqio_model(base, EXTRA_IDS), extra_ids=EXTRA_IDS)
    from_base = SentencePieceVocabulary(base, extra_ids=EXTRA_IDS)
    assert from_old.serialized_model == old_file  # the file's bytes: data caches stay valid
    assert from_old == from_seqio == from_base
    assert from_old.tokenizer_model == from_seqio.tokenizer_model == from_base.tokenizer_model
    old_pieces = processor(old_file)
    for text in ALL_TEXTS:
        ids = from_old.encode(text)
        assert from_seqio.encode(text) == from_base.encode(text) == ids
        if "<extra_id_" not in text:
            assert ids == old_pieces.EncodeAsIds(text)  # what older t5pre gave
    for i in (0, 1, 99):
        assert from_old.id_to_piece(from_old.sentinel(i)) == f"<extra_id_{i}>"
    # save() keeps the spelling older t5pre reads, and load gives the same vocabulary back
    from_seqio.save(tmp_path)
    saved = proto_of((tmp_path / "spiece.model").read_bytes())
    assert saved.pieces[-1].piece == "<extra_id_0>" and saved.pieces[-100].piece == "<extra_id_99>"
    assert load_vocabulary(tmp_path) == from_old


def test_exported_tokenizer_json_encodes_and_decodes_like_t5pre(case, tmp_path):
    from t5pre.models.hf_export import hf_tokenizer

    vocabulary, _, texts, hf = case
    tokenizer, _, sentinels = hf_tokenizer(vocabulary)
    assert len(sentinels) == EXTRA_IDS and tokenizer.get_vocab_size() == vocabulary.vocab_size
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="</s>",
                                                unk_token="<unk>", pad_token="<pad>")
    for text in texts:
        ids = fast(text)["input_ids"]
        assert ids == hf(text)["input_ids"] == vocabulary.encode(text) + [vocabulary.eos_id], text
        assert fast.decode(ids[:-1]) == vocabulary.decode(ids), text
        # sentinels are special tokens, as in Hugging Face's T5
        words = [i for i in ids[:-1] if not vocabulary.is_sentinel(i)]
        assert fast.decode(ids, skip_special_tokens=True) == fast.decode(words), text


def test_saved_model_tokenizes_like_python(case, tmp_path):
    """The serving graph's text <-> ids (Seq2SeqPreprocessor.encode_tf / decode_tf, what
    `t5pre export` builds) saved and run in a process with only tensorflow + tensorflow_text."""
    import tensorflow as tf

    from t5pre.models.preprocessing import Seq2SeqPreprocessor

    vocabulary, _, texts, _ = case
    vocabulary = type(vocabulary)(vocabulary.serialized_model, extra_ids=vocabulary.extra_ids)
    preprocessor = Seq2SeqPreprocessor(vocabulary, 64)
    module = tf.Module()
    module.tokenizer = vocabulary.tf_tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(texts):
        ids, mask = preprocessor.encode_tf(texts)
        return {"ids": ids, "mask": mask, "text": preprocessor.decode_tf(ids)}

    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": round_trip})
    loader = textwrap.dedent("""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the ops)
        fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        out = fn(texts=tf.constant(json.loads(sys.stdin.read()), tf.string))
        print(json.dumps({"ids": out["ids"].numpy().tolist(), "mask": out["mask"].numpy().tolist(),
                          "text": [s.decode() for s in out["text"].numpy()]}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", loader, str(tmp_path / "sm")], cwd="/",
                          input=json.dumps(texts), capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    ids, mask = preprocessor.encode_batch(texts)
    assert served["ids"] == ids.tolist() and served["mask"] == mask.tolist()
    assert served["text"] == [vocabulary.decode(row) for row in ids.tolist()]


def test_hf_t5_directory_converted_and_exported_back_tokenizes_like_the_original(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from test_hf_convert import write_checkpoint

    from t5pre.cli import main

    base = train_base_model()
    pieces = len(proto_of(base).pieces)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=pieces + EXTRA_IDS, d_model=16, d_kv=8, d_ff=24, num_layers=1,
        num_decoder_layers=1, num_heads=2, relative_attention_num_buckets=8,
        relative_attention_max_distance=16, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    original = tmp_path / "hf"
    write_checkpoint(model.eval(), original)
    hf_t5_tokenizer(base, original).save_pretrained(str(original))  # tokenizer files as HF has
    assert not proto_of((original / "spiece.model").read_bytes()).pieces[-1].piece.endswith(">")

    assert main(["convert", "hf", str(original), str(tmp_path / "t5pre")]) == 0
    assert main(["export", "--format", "hf", "--model-dir", str(tmp_path / "t5pre"),
                 "--out", str(tmp_path / "back")]) == 0
    before = transformers.AutoTokenizer.from_pretrained(str(original))
    after = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "back"))
    converted = load_vocabulary(tmp_path / "t5pre")
    assert converted.vocab_size == pieces + EXTRA_IDS
    for text in ALL_TEXTS:
        ids = before(text)["input_ids"]
        assert after(text)["input_ids"] == ids, text
        assert converted.encode(text) + [1] == ids, text
        assert after.decode(ids[:-1]) == converted.decode(ids), text
    # and back again: the export's spiece.model (sentinels spelt "▁<extra_id_i>") converts to the
    # same vocabulary
    assert main(["convert", "hf", str(tmp_path / "back"), str(tmp_path / "again")]) == 0
    assert load_vocabulary(tmp_path / "again") == converted
    capsys.readouterr()
