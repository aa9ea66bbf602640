"""Fast WordPiece: ids and offsets identical to HF tokenizers (the pinned reference), edge cases, errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from paretoml.text import Encoding, WordPieceConfig, WordPieceTokenizer

SETTINGS = {  # name -> (vocab file, lowercase)
    "uncased": ("bert-base-uncased.txt", True),
    "cased": ("bert-base-multilingual-cased.txt", False),
}


def hf_tokenizer(vocab: list[str] | dict, lowercase: bool, strip_accents=None, max_chars: int = 100):
    """The reference pipeline of ../shared/data/README.md (no added tokens); skips without HF."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    if isinstance(vocab, list):
        vocab = {t: i for i, t in enumerate(vocab)}
    t = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=max_chars))
    t.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return t


@pytest.fixture(scope="module", params=list(SETTINGS))
def pair(request, shared_data):
    """(ours, HF) for one vocabulary."""
    name, lc = SETTINGS[request.param]
    path = shared_data / "vocab" / name
    vocab = path.read_text(encoding="utf-8").split("\n")[:-1]
    return WordPieceTokenizer.from_file(path, lowercase=lc), hf_tokenizer(vocab, lc)


def assert_same(ours: WordPieceTokenizer, hf, texts: list[str]) -> None:
    mine = ours.encode_batch(texts, num_threads=2)
    ref = hf.encode_batch(texts)
    bad = [i for i, (a, b) in enumerate(zip(mine, ref))
           if a.ids.tolist() != b.ids or list(map(tuple, a.offsets.tolist())) != b.offsets]
    if bad:
        i = bad[0]
        pytest.fail(f"{len(bad)}/{len(texts)} texts differ; first {texts[i][:200]!r}: "
                    f"ours {mine[i].tokens[:30]} {mine[i].offsets.tolist()[:30]}, "
                    f"HF {ref[i].tokens[:30]} {ref[i].offsets[:30]}")


def sentences(shared_data) -> list[str]:
    with open(shared_data / "text" / "multilingual_sentences.tsv", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f]


def corpus_lines(shared_data, limit: int | None = None) -> list[str]:
    out = []
    with gzip.open(shared_data / "text" / "multilingual_debian_12MB.txt.gz", "rt", encoding="utf-8") as f:
        for line in f:
            out.append(line.rstrip("\n"))
            if limit is not None and len(out) >= limit:
                break
    return out


# -- parity on real text ---------------------------------------------------------------------
def test_encode_matches_hf_on_all_sentences(pair, shared_data):
    assert_same(*pair, sentences(shared_data))


def test_encode_matches_hf_on_corpus_sample(pair, shared_data):
    assert_same(*pair, corpus_lines(shared_data, 4000))


@pytest.mark.slow
def test_encode_matches_hf_on_full_corpus(pair, shared_data):
    assert_same(*pair, corpus_lines(shared_data))


def test_encode_single_matches_batch(pair, shared_data):
    ours, _ = pair
    texts = sentences(shared_data)[::40]
    for t, b in zip(texts, ours.encode_batch(texts, num_threads=1)):
        assert ours.encode(t).ids.tolist() == b.ids.tolist()


def test_encode_batch_threads_agree(pair, shared_data):
    ours, _ = pair
    texts = corpus_lines(shared_data, 3000)
    one = ours.encode_batch_flat(texts, num_threads=1)
    four = ours.encode_batch_flat(texts, num_threads=4)
    assert np.array_equal(one[0], four[0]) and np.array_equal(one[1], four[1])


# -- every code point ------------------------------------------------------------------------
def _code_point_texts(step: int, offset: int = 0) -> list[str]:
    cps = [c for c in range(offset, 0x110000, step) if not 0xD800 <= c < 0xE000]
    # alone, inside a word, doubled, and between a word and punctuation
    return [s for c in cps for s in (chr(c), f"ab{chr(c)}cd", chr(c) * 2, f"x{chr(c)}.")]


def test_code_points_strided_sample(pair):
    assert_same(*pair, _code_point_texts(step=97, offset=13) + _code_point_texts(step=1)[: 4 * 0x3000])


@pytest.mark.slow
def test_code_points_exhaustive(pair):
    for offset in range(0, 0x110000, 0x20000):
        cps = range(offset, min(offset + 0x20000, 0x110000))
        texts = [s for c in cps if not 0xD800 <= c < 0xE000 for s in (chr(c), f"ab{chr(c)}cd")]
        assert_same(*pair, texts)


@pytest.mark.parametrize("lowercase,strip", [(True, False), (False, True)])
def test_other_normalizer_settings_match_hf(shared_data, lowercase, strip):
    path = shared_data / "vocab" / "bert-base-multilingual-cased.txt"
    vocab = path.read_text(encoding="utf-8").split("\n")[:-1]
    ours = WordPieceTokenizer.from_file(path, lowercase=lowercase, strip_accents=strip)
    texts = sentences(shared_data)[::3] + _code_point_texts(step=211, offset=5) + ["İstanbul İİ", "ǅ ß ﬁ Σσς"]
    assert_same(ours, hf_tokenizer(vocab, lowercase, strip), texts)


# -- edge cases ------------------------------------------------------------------------------
EDGE = [
    "", " ", "\t\n\r  \u3000\u2028", "\x00", "\ufffd", "a\x00b", "\x00ab\x01", "a\u200bb", "\u200d",
    "[MASK] is [CLS] [SEP] [UNK]", "##", "###", "a##b", "## ing", "#hash #", "e\u0301 a\u0300\u0316",
    "\u0301\u0301", "👩‍👩‍👧‍👦 👍🏽 🇫🇷", "x" * 99, "x" * 100, "x" * 101, "é" * 100, "é" * 101,
    "中" * 150, "e\u0301" * 60, "İ" * 99, "İ" * 101, "ß Σ ς ǅ ﬃ", "\U0002B820\U0002B920\U0002A6DF",
    "Hello, World!!! (don't) — “quotes” «guillemets» ¿qué?", "٠١٢ ١٢٣ ٪", "a\u061db", "tab\there",
    "un" + "aff" * 40 + "able", "ﾃｽﾄ ＡＢＣ", "\U000e0001\U000e0020", "\uf8ff\U000f0000",
]


def test_edge_cases_match_hf(pair):
    assert_same(*pair, EDGE)


def test_word_length_limit_counts_normalized_code_points(pair):
    ours, hf = pair
    unk = ours.token_to_id("[UNK]")
    for n, expect_unk in [(99, False), (100, False), (101, True)]:
        ids = ours.encode("a" * n).ids.tolist()
        assert (ids == [unk]) == expect_unk
        assert ids == hf.encode("a" * n).ids


def test_very_long_line_is_linear(pair):
    ours, hf = pair
    line = ("word " * 200_000) + ("x" * 100_000)  # 1.1M code points, one 100k-char word
    enc = ours.encode(line)
    assert len(enc) == 200_001 and enc.ids[-1] == ours.token_to_id("[UNK]")
    assert tuple(enc.offsets[-1]) == (1_000_000, 1_100_000)
    assert enc.ids[:-1].tolist() == hf.encode("word " * 1000).ids * 200


def test_offsets_point_into_original_text(pair):
    ours, _ = pair
    text = "Héllo\x00wörld, 中文!  done"
    enc = ours.encode(text)
    for tok, (a, b) in zip(enc.tokens, enc.offsets.tolist()):
        piece = text[a:b].replace("\x00", "")
        assert piece.lower().startswith(tok.lstrip("#")[:1].lower()) or tok == "[UNK]"


# -- fuzzing against HF ----------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

_ALPHA = st.one_of(
    st.sampled_from(list("aeiouxyzAEIOU ##.,!?'-\t\n\x00\u0301\u0300İßΣ中文日本語한국어éèçñöüÅ") + ["\u200d", "👍"]),
    st.characters(blacklist_categories=("Cs",)),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(texts=st.lists(st.text(_ALPHA, max_size=40), min_size=1, max_size=8))
def test_fuzz_matches_hf(pair, texts):
    assert_same(*pair, texts)


# -- single-word LinMaxMatch and MaxMatch ----------------------------------------------------
TOY_VOCAB = ["[UNK]", "a", "b", "ab", "abc", "abcd", "##a", "##b", "##c", "##bc", "##bcd", "##d", "#",
             "##", "###", "##ab", "c", "a#", "##d#", "bb", "##bbb"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(word=st.text(st.sampled_from("abcd#e"), min_size=1, max_size=14))
def test_tokenize_word_matches_hf_on_toy_vocab(word):
    pytest.importorskip("tokenizers")
    from tokenizers import models

    ref = models.WordPiece({t: i for i, t in enumerate(TOY_VOCAB)}, unk_token="[UNK]")
    want = [(t.id, t.offsets) for t in ref.tokenize(word)]
    for algo in ("linmaxmatch", "maxmatch"):
        tok = _toy(algo)
        enc = tok.tokenize_word(word)
        assert list(zip(enc.ids.tolist(), map(tuple, enc.offsets.tolist()))) == want, algo


_TOYS: dict = {}


def _toy(algo: str) -> WordPieceTokenizer:
    if algo not in _TOYS:
        _TOYS[algo] = WordPieceTokenizer(TOY_VOCAB, WordPieceConfig(algorithm=algo))
    return _TOYS[algo]


def test_tokenize_word_matches_hf_wordpiece_on_real_words(pair, shared_data):
    ours, hf = pair
    words = sorted({w for s in sentences(shared_data)[::4] for w in s.split()})[:1000]
    for w in words + ["##ing", "a##", "x" * 100, "x" * 101]:
        want = [t.id for t in hf.model.tokenize(w)]
        assert ours.tokenize_word(w).ids.tolist() == want, w


def test_maxmatch_end_to_end_matches_hf(shared_data):
    path = shared_data / "vocab" / "bert-base-uncased.txt"
    vocab = path.read_text(encoding="utf-8").split("\n")[:-1]
    ours = WordPieceTokenizer.from_file(path, lowercase=True, algorithm="maxmatch")
    assert_same(ours, hf_tokenizer(vocab, True), sentences(shared_data)[::2] + EDGE)


# -- special tokens, decode, tokenizer.json --------------------------------------------------
def test_add_special_tokens_matches_hf_template(pair, shared_data):
    pytest.importorskip("tokenizers")
    from tokenizers.processors import TemplateProcessing

    ours, hf = pair
    cls_id, sep_id = ours.token_to_id("[CLS]"), ours.token_to_id("[SEP]")
    hf_special = hf_tokenizer(list(ours.vocab), ours.config.lowercase)
    hf_special.post_processor = TemplateProcessing(single="[CLS] $A [SEP]",
                                                   special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    special = WordPieceTokenizer(ours.vocab, WordPieceConfig(lowercase=ours.config.lowercase,
                                                             add_special_tokens=True))
    assert_same(special, hf_special, sentences(shared_data)[:200] + ["", "  "])


def test_decode_matches_hf_wordpiece_decoder(pair, shared_data):
    pytest.importorskip("tokenizers")
    from tokenizers import decoders

    ours, hf = pair
    hf.decoder = decoders.WordPiece()
    for t in sentences(shared_data)[::25] + ["don't stop , ok ? yes !", "it 's ok"]:
        ids = ours.encode(t).ids
        assert ours.decode(ids) == hf.decode(ids.tolist())


def test_decode_skips_cls_sep():
    tok = WordPieceTokenizer(["[UNK]", "[CLS]", "[SEP]", "hi", "##s"], WordPieceConfig(add_special_tokens=True))
    enc = tok.encode("his hi")
    assert enc.tokens == ["[CLS]", "hi", "##s", "hi", "[SEP]"]
    assert tok.decode(enc.ids) == "his hi"
    assert tok.decode(enc.ids, skip_special_tokens=False) == "[CLS] his hi [SEP]"


def test_from_hf_json_round_trip(pair, tmp_path, shared_data):
    ours, hf = pair
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    loaded = WordPieceTokenizer.from_hf_json(path)
    assert loaded.config.lowercase == ours.config.lowercase and not loaded.config.add_special_tokens
    assert_same(loaded, hf, sentences(shared_data)[::10])


def test_encoding_fields():
    tok = WordPieceTokenizer(["[UNK]", "hi", "##s", "!"])
    enc = tok.encode("his!")
    assert isinstance(enc, Encoding) and len(enc) == 3
    assert enc.tokens == ["hi", "##s", "!"] and enc.offsets.tolist() == [[0, 2], [2, 3], [3, 4]]
    assert enc.ids.dtype == np.int32 and "Encoding" in repr(enc)


# -- errors ----------------------------------------------------------------------------------
def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        WordPieceTokenizer.from_file(tmp_path / "nope.txt")
    dup = tmp_path / "dup.txt"
    dup.write_text("[UNK]\na\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate token 'a' at ids 1 and 3"):
        WordPieceTokenizer.from_file(dup)
    no_unk = tmp_path / "nounk.txt"
    no_unk.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unk_token '\\[UNK\\]' is not in the vocabulary"):
        WordPieceTokenizer.from_file(no_unk)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"[UNK]\na\n\xff\n")
    with pytest.raises(ValueError, match="line 3 is not UTF-8"):
        WordPieceTokenizer.from_file(bad)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"[UNK]\r\nhi\r\n##s")
    assert WordPieceTokenizer.from_file(crlf).encode("his").ids.tolist() == [1, 2]


def test_constructor_errors():
    with pytest.raises(ValueError, match="empty"):
        WordPieceTokenizer([])
    with pytest.raises(TypeError, match="sequence of str"):
        WordPieceTokenizer(["[UNK]", 3])
    with pytest.raises(TypeError, match="WordPieceConfig"):
        WordPieceTokenizer(["[UNK]"], {"lowercase": True})
    with pytest.raises(ValueError, match="cls_token"):
        WordPieceTokenizer(["[UNK]", "[SEP]"], WordPieceConfig(add_special_tokens=True))


@pytest.mark.parametrize("field,value", [("lowercase", 1), ("strip_accents", "yes"),
                                         ("max_input_chars_per_word", 0), ("max_input_chars_per_word", True),
                                         ("algorithm", "greedy"), ("unk_token", ""),
                                         ("add_special_tokens", None)])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=f"WordPieceConfig.{field}"):
        WordPieceConfig(**{field: value})


def test_encode_input_errors():
    tok = WordPieceTokenizer(["[UNK]", "a"])
    with pytest.raises(TypeError, match="must be a str"):
        tok.encode(b"abc")
    with pytest.raises(ValueError, match="lone surrogate U\\+D800 at index 1"):
        tok.encode("a\ud800b")
    with pytest.raises(ValueError, match="texts\\[1\\] has a lone surrogate U\\+DC00 at index 2"):
        tok.encode_batch(["aa", "bb\udc00"])
    with pytest.raises(TypeError, match="texts\\[0\\] must be a str"):
        tok.encode_batch([None])
    with pytest.raises(ValueError, match="num_threads"):
        tok.encode_batch(["a"], num_threads=0)
    with pytest.raises(TypeError, match="word must be a str"):
        tok.tokenize_word(1)
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.tokenize_word("\udfff")
    with pytest.raises(ValueError, match="ids must be in \\[0, 2\\)"):
        tok.decode([0, 5])
    assert tok.encode_batch([]) == []


def test_from_hf_json_errors(tmp_path):
    p = tmp_path / "t.json"
    with pytest.raises(FileNotFoundError):
        WordPieceTokenizer.from_hf_json(p)
    p.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON tokenizer file"):
        WordPieceTokenizer.from_hf_json(p)
    good = {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]"},
            "normalizer": {"type": "BertNormalizer", "lowercase": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"}}
    for key, value, msg in [("model", {"type": "BPE"}, "model.type"),
                            ("model", {**good["model"], "continuing_subword_prefix": "@@"}, "prefix"),
                            ("normalizer", {"type": "NFC"}, "BertNormalizer"),
                            ("pre_tokenizer", {"type": "Whitespace"}, "BertPreTokenizer"),
                            ("model", {**good["model"], "vocab": {"[UNK]": 0, "a": 2}}, "without gaps")]:
        p.write_text(json.dumps({**good, key: value}), encoding="utf-8")
        with pytest.raises(ValueError, match=msg):
            WordPieceTokenizer.from_hf_json(p)
    p.write_text(json.dumps(good), encoding="utf-8")
    assert WordPieceTokenizer.from_hf_json(p).encode("A a").ids.tolist() == [1, 1]
