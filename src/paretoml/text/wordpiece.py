"""Fast WordPiece: BERT tokenization in one linear pass, ids identical to HF tokenizers.

Song, Salcianu, Song, Dopson, Zhou, "Fast WordPiece Tokenization" (EMNLP 2021, arXiv
2012.15524). The vocabulary goes into a trie with Aho-Corasick-style failure links and failure
pops, so longest-match-first WordPiece never backtracks (LinMaxMatch, linear in the word); the
end-to-end variant folds BERT normalisation and pre-tokenisation into the same pass over the
code points, through one table lookup per code point (see :mod:`paretoml.text.normalize`).

    tok = WordPieceTokenizer.from_file("bert-base-uncased.txt", lowercase=True)
    enc = tok.encode("Hello, world!")          # enc.ids, enc.tokens, enc.offsets
    encs = tok.encode_batch(lines, num_threads=4)

The reference is HF ``tokenizers``: ``Tokenizer(WordPiece(vocab, unk_token, max_input_chars_per_word))``
with ``BertNormalizer(lowercase=..., strip_accents=...)`` and ``BertPreTokenizer()``; ids and
offsets (code-point indices into the original string) match it exactly.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from paretoml.text import normalize as _norm

_ALGORITHMS = ("linmaxmatch", "maxmatch")
_SPECIALS_SKIPPED_BY_DECODE = ("[CLS]", "[SEP]", "[PAD]")


@dataclass(frozen=True)
class WordPieceConfig:
    """How a :class:`WordPieceTokenizer` normalises and splits text.

    Attributes:
        lowercase: lowercase (Rust ``char::to_lowercase``, as HF) — BERT "uncased".
        strip_accents: NFD and drop non-spacing marks; None follows ``lowercase`` (HF's default).
        unk_token: the token a word that cannot be tokenized becomes (must be in the vocab).
        max_input_chars_per_word: longer words (in normalised code points) become ``unk_token``.
        add_special_tokens: wrap every encoding in ``cls_token`` ... ``sep_token``.
        algorithm: ``"linmaxmatch"`` (Fast WordPiece, linear) or ``"maxmatch"`` (the classic
            longest-match-first that backs off, quadratic in the word; the baseline).
    """

    lowercase: bool = False
    strip_accents: bool | None = None
    unk_token: str = "[UNK]"
    max_input_chars_per_word: int = 100
    add_special_tokens: bool = False
    cls_token: str = "[CLS]"
    sep_token: str = "[SEP]"
    algorithm: str = "linmaxmatch"

    def __post_init__(self) -> None:
        for name in ("lowercase", "add_special_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"WordPieceConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.strip_accents is not None and not isinstance(self.strip_accents, bool):
            raise ValueError(f"WordPieceConfig.strip_accents must be None or a bool, got {self.strip_accents!r}")
        m = self.max_input_chars_per_word
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 1_000_000_000:
            raise ValueError("WordPieceConfig.max_input_chars_per_word must be an int in "
                             f"[1, 1e9], got {m!r}")
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"WordPieceConfig.algorithm must be one of {_ALGORITHMS}, got {self.algorithm!r}")
        for name in ("unk_token", "cls_token", "sep_token"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"WordPieceConfig.{name} must be a non-empty str, got {getattr(self, name)!r}")

    @property
    def strips_accents(self) -> bool:
        return self.lowercase if self.strip_accents is None else self.strip_accents


class Encoding:
    """One tokenized text: ``ids`` (n,) int32, ``offsets`` (n, 2) int32 ``[start, end)`` code-point
    indices into the original string (special tokens get (0, 0), as in HF), ``tokens`` (strings).

    The arrays are views into one (n, 3) block (shared by a whole batch: copy before writing);
    ``ids.tolist()`` gives a list.
    """

    __slots__ = ("_rows", "_a", "_b", "_vocab")

    def __init__(self, rows: np.ndarray, vocab: tuple[str, ...], a: int = 0, b: int | None = None):
        # rows[a:b] of a batch's (N, 3) block; sliced on access so a batch costs one object per text
        self._rows, self._a, self._b, self._vocab = rows, a, rows.shape[0] if b is None else b, vocab

    @property
    def ids(self) -> np.ndarray:
        return self._rows[self._a:self._b, 0]

    @property
    def offsets(self) -> np.ndarray:
        return self._rows[self._a:self._b, 1:]

    @property
    def tokens(self) -> list[str]:
        v = self._vocab
        return [v[i] for i in self.ids.tolist()]

    def __len__(self) -> int:
        return self._b - self._a

    def __repr__(self) -> str:
        return f"Encoding(n={len(self)}, ids={self.ids.tolist()[:8]}{'...' if len(self) > 8 else ''})"


class WordPieceTokenizer:
    """BERT WordPiece tokenizer (Fast WordPiece, end-to-end) over a vocabulary list.

    Args:
        vocab: the tokens, id = position. Suffix tokens start with ``##``.
        config: normalisation and matching options.
    """

    def __init__(self, vocab: Sequence[str], config: WordPieceConfig = WordPieceConfig()):
        if not isinstance(config, WordPieceConfig):
            raise TypeError(f"WordPieceTokenizer: config must be a WordPieceConfig, got {type(config).__name__}")
        vocab = tuple(vocab)
        if not vocab:
            raise ValueError("WordPieceTokenizer: the vocabulary is empty")
        if not all(isinstance(t, str) for t in vocab):
            raise TypeError("WordPieceTokenizer: vocab must be a sequence of str")
        self.config = config
        self.vocab = vocab
        self._token_to_id = _check_vocab(vocab, config, where="WordPieceTokenizer")
        c = config
        special = c.add_special_tokens
        for name in ("cls_token", "sep_token") if special else ():
            if getattr(c, name) not in self._token_to_id:
                raise ValueError(f"WordPieceTokenizer: add_special_tokens needs {name} "
                                 f"{getattr(c, name)!r} in the vocabulary; it is not there")
        algo = _ALGORITHMS.index(c.algorithm)
        self._params = np.array([self._token_to_id[c.unk_token], c.max_input_chars_per_word,
                                 self._token_to_id[c.cls_token] if special else -1,
                                 self._token_to_id[c.sep_token] if special else -1, algo], np.int64)
        self._blob, self._alphabet = _build_blob(vocab, c.lowercase, c.strips_accents)
        self._word_blob: np.ndarray | None = None  # with literal "##..." paths, for tokenize_word
        from paretoml.text import _kernels

        self._k = _kernels

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_file(cls, vocab_path: str | os.PathLike, *, lowercase: bool = False,
                  strip_accents: bool | None = None, unk_token: str = "[UNK]",
                  max_input_chars_per_word: int = 100, add_special_tokens: bool = False,
                  algorithm: str = "linmaxmatch") -> "WordPieceTokenizer":
        """Load a BERT ``vocab.txt`` (one token per line, id = line number)."""
        config = WordPieceConfig(lowercase=lowercase, strip_accents=strip_accents, unk_token=unk_token,
                                 max_input_chars_per_word=max_input_chars_per_word,
                                 add_special_tokens=add_special_tokens, algorithm=algorithm)
        path = Path(vocab_path)
        if not path.is_file():
            raise FileNotFoundError(f"WordPieceTokenizer.from_file: vocabulary file {str(path)!r} not found "
                                    "(expected a BERT vocab.txt, one token per line)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise ValueError(f"WordPieceTokenizer.from_file: {path}: line {line} is not UTF-8") from None
        # like HF's WordPiece.read_file: one token per line, trailing whitespace removed
        return cls([t.rstrip() for t in text.split("\n")[: text.count("\n") + (not text.endswith("\n"))]],
                   config)

    @classmethod
    def from_hf_json(cls, path: str | os.PathLike, *, add_special_tokens: bool | None = None,
                     algorithm: str = "linmaxmatch") -> "WordPieceTokenizer":
        """Load an HF ``tokenizer.json`` with a WordPiece model, BertNormalizer and BertPreTokenizer.

        ``add_special_tokens`` defaults to whether the file has a post-processor ([CLS] ... [SEP]).
        Added tokens are not matched inside the text (HF would map a literal "[MASK]" to its id;
        here it becomes "[", "mask", "]", as in the plain pipeline).
        """
        where = f"WordPieceTokenizer.from_hf_json({str(path)!r})"
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: not a JSON tokenizer file ({e})") from None
        model = spec.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ValueError(f"{where}: model.type must be 'WordPiece', got {model.get('type')!r}")
        if model.get("continuing_subword_prefix", "##") != "##":
            raise ValueError(f"{where}: only the '##' continuing_subword_prefix is supported, "
                             f"got {model['continuing_subword_prefix']!r}")
        norm = spec.get("normalizer") or {}
        if norm.get("type") != "BertNormalizer" or not norm.get("clean_text", True) \
                or not norm.get("handle_chinese_chars", True):
            raise ValueError(f"{where}: the normalizer must be a BertNormalizer with clean_text and "
                             f"handle_chinese_chars, got {norm}")
        if (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
            raise ValueError(f"{where}: the pre_tokenizer must be BertPreTokenizer, got {spec.get('pre_tokenizer')}")
        vocab_map: dict[str, int] = model.get("vocab") or {}
        ids = sorted(vocab_map.values())
        if ids != list(range(len(ids))):
            raise ValueError(f"{where}: vocab ids must be 0..{len(ids) - 1} without gaps or repeats")
        vocab = [""] * len(ids)
        for t, i in vocab_map.items():
            vocab[i] = t
        if add_special_tokens is None:
            add_special_tokens = spec.get("post_processor") is not None
        config = WordPieceConfig(lowercase=bool(norm.get("lowercase", True)),
                                 strip_accents=norm.get("strip_accents"),
                                 unk_token=model.get("unk_token", "[UNK]"),
                                 max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
                                 add_special_tokens=add_special_tokens, algorithm=algorithm)
        return cls(vocab, config)

    # -- vocabulary -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    def id_to_token(self, id: int) -> str:
        return self.vocab[id]

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, text: str) -> Encoding:
        """Tokenize one text (normalise, split, WordPiece) in a single pass."""
        try:
            b = text.encode("utf-32-le")
        except AttributeError:
            raise TypeError(f"WordPieceTokenizer.encode: text must be a str, got {type(text).__name__}") from None
        except UnicodeEncodeError as e:
            raise ValueError(_surrogate_message("WordPieceTokenizer.encode: text", text, e.start)) from None
        return Encoding(self._k.encode_one(self._blob, np.frombuffer(b, np.int32), self._params), self.vocab)

    def encode_batch(self, texts: Iterable[str], num_threads: int | None = None) -> list[Encoding]:
        """Tokenize many texts; ``num_threads`` (default: all cores) workers run without the GIL."""
        texts = texts if isinstance(texts, list) else list(texts)
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"WordPieceTokenizer.encode_batch: num_threads must be an int >= 1, got {num_threads!r}")
        rows, splits = self.encode_batch_flat(texts, num_threads=num_threads)
        v = self.vocab
        s = splits.tolist()
        return [Encoding(rows, v, a, b) for a, b in zip(s[:-1], s[1:])]

    def encode_batch_flat(self, texts: Sequence[str], num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize many texts into one block: ``rows`` (N, 3) int32 of (id, start, end) and
        ``row_splits`` (len(texts) + 1,) int64 — text i is ``rows[row_splits[i]:row_splits[i+1]]``."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"WordPieceTokenizer.encode_batch: texts[{i}] must be a str, got {type(t).__name__}")
        starts = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)), out=starts[1:])
        try:
            b = "".join(texts).encode("utf-32-le")
        except UnicodeEncodeError as e:
            i = int(np.searchsorted(starts, e.start, side="right")) - 1
            raise ValueError(_surrogate_message(f"WordPieceTokenizer.encode_batch: texts[{i}]", texts[i],
                                                e.start - int(starts[i]))) from None
        cps = np.frombuffer(b, np.int32)
        n = len(texts)
        chunks = min(num_threads, max(1, cps.shape[0] // 65536), max(n, 1))
        if chunks <= 1:
            return self._k.encode_many(self._blob, cps, starts, self._params)
        cut = np.searchsorted(starts, np.linspace(0, cps.shape[0], chunks + 1)).tolist()
        cut[0], cut[-1] = 0, n
        bounds = [(a, b) for a, b in zip(cut[:-1], cut[1:]) if b > a]
        with ThreadPoolExecutor(len(bounds)) as ex:
            parts = list(ex.map(lambda ab: self._k.encode_many(self._blob, cps, starts[ab[0]:ab[1] + 1],
                                                               self._params), bounds))
        rows = np.concatenate([p[0] for p in parts])
        splits = np.empty(n + 1, np.int64)
        base = 0
        for (a, b), (r, s) in zip(bounds, parts):
            splits[a:b] = s[:-1] + base
            base += r.shape[0]
        splits[n] = base
        return rows, splits

    def tokenize_word(self, word: str) -> Encoding:
        """WordPiece of one already normalised and split word (no normalisation, no splitting;
        like HF's ``WordPiece.tokenize``); offsets are code-point indices into ``word``."""
        if not isinstance(word, str):
            raise TypeError(f"WordPieceTokenizer.tokenize_word: word must be a str, got {type(word).__name__}")
        try:
            cps = np.frombuffer(word.encode("utf-32-le"), np.int32)
        except UnicodeEncodeError as e:
            raise ValueError(_surrogate_message("WordPieceTokenizer.tokenize_word: word", word, e.start)) from None
        blob = self._blob
        if word.startswith("#"):  # may match "##..." tokens spelled out: needs the literal paths
            if self._word_blob is None:
                self._word_blob = _build_blob(self.vocab, self.config.lowercase, self.config.strips_accents,
                                              literal_suffix=True)[0]
            blob = self._word_blob
        return Encoding(self._k.tokenize_word(blob, self._alphabet, cps, self._params), self.vocab)

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Text from ids, like HF's WordPiece decoder: "##" pieces glue on, other tokens are joined
        by a space, and spaces before . ? ! , and English contractions are cleaned up.
        ``skip_special_tokens`` drops [CLS], [SEP] and [PAD]."""
        ids = np.asarray(ids).reshape(-1).tolist()
        n = len(self.vocab)
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < n]
        if bad:
            raise ValueError(f"WordPieceTokenizer.decode: ids must be in [0, {n}), got {bad[0]!r}")
        toks = [self.vocab[i] for i in ids]
        if skip_special_tokens:
            toks = [t for t in toks if t not in _SPECIALS_SKIPPED_BY_DECODE]
        parts = []
        for k, t in enumerate(toks):
            if k:
                t = t[2:] if t.startswith("##") else " " + t
            parts.append(_cleanup(t))
        return "".join(parts)


_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _cleanup(s: str) -> str:
    for a, b in _CLEANUPS:
        s = s.replace(a, b)
    return s


def _surrogate_message(where: str, text: str, pos: int) -> str:
    return (f"{where} has a lone surrogate U+{ord(text[pos]):04X} at index {pos}, which is not a "
            "Unicode scalar value (HF tokenizers rejects it too); clean it first, e.g. "
            "s.encode('utf-8', 'replace').decode('utf-8')")


def _check_vocab(vocab: tuple[str, ...], config: WordPieceConfig, where: str) -> dict[str, int]:
    token_to_id: dict[str, int] = {}
    for i, t in enumerate(vocab):
        if t in token_to_id:
            raise ValueError(f"{where}: duplicate token {t!r} at ids {token_to_id[t]} and {i} "
                             "(line numbers - 1 in a vocab.txt); each token must appear once")
        token_to_id[t] = i
    if config.unk_token not in token_to_id:
        raise ValueError(f"{where}: the unk_token {config.unk_token!r} is not in the vocabulary "
                         f"({len(vocab)} tokens); add it or pass unk_token=")
    return token_to_id


@lru_cache(maxsize=4)
def _code_point_table(lowercase: bool, strip_accents: bool) -> _norm.CodePointTable:
    return _norm.code_point_table(lowercase, strip_accents)


def _build_blob(vocab: tuple[str, ...], lowercase: bool, strip_accents: bool,
                literal_suffix: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pack the normalisation table (with char ids) and the trie into one int32 array."""
    from paretoml.text import _kernels as K

    toks = [(i, t) for i, t in enumerate(vocab) if t]
    joined = "".join(t for _, t in toks)
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.int32)
    alphabet = np.unique(cps).astype(np.int32)
    cid_of = np.zeros(_norm.N_CODE_POINTS, np.int32)
    cid_of[alphabet] = np.arange(1, alphabet.shape[0] + 1, dtype=np.int32)
    tok_off = np.zeros(len(toks) + 1, np.int64)
    np.cumsum([len(t) for _, t in toks], out=tok_off[1:])
    tok_id = np.array([i for i, _ in toks], np.int32)
    tok_suffix = np.array([len(t) > 2 and t.startswith("##") for _, t in toks], np.bool_)
    trie = K.build_trie(cid_of[cps], tok_off, tok_id, tok_suffix, alphabet.shape[0], literal_suffix)

    cpt = _code_point_table(lowercase, strip_accents)
    kind = cpt.kind.astype(np.int32)
    chars = (kind == _norm.WORD) | (kind == _norm.ISOLATED)
    payload = np.where(chars, cid_of[cpt.out], np.where(kind == _norm.EXPAND, cpt.out, 0))
    table = (payload << 3) | kind
    exp_len = np.array([len(x) for x in cpt.expansions], np.int32)
    exp_start = np.zeros(len(exp_len), np.int32)
    if len(exp_len):
        np.cumsum(exp_len[:-1], out=exp_start[1:])
    exp_items = np.array([((int(cid_of[c]) if c >= 0 else 0) << 3) | k
                          for x in cpt.expansions for k, c in x], np.int32)
    sections = [table, exp_start, exp_len, exp_items, *trie]
    assert len(sections) == K.N_SECTIONS
    # header: start of section i at [i], end of the last at [N_SECTIONS]
    header = np.cumsum([K.HEADER] + [s.shape[0] for s in sections])
    blob = np.concatenate([header.astype(np.int32)] + [s.astype(np.int32) for s in sections])
    return blob, alphabet
