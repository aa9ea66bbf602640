"""BERT normalisation and pre-tokenisation as per-code-point tables (HF tokenizers' rules).

HF's BertNormalizer (clean text, spaces around CJK ideographs, NFD + drop Mn, lowercase) and
BertPreTokenizer (split on whitespace, isolate punctuation) each act on one code point at a
time, so their composition is a function of the code point alone: it deletes it, turns it into
a word separator, makes it a one-character word (punctuation, CJK), keeps it as a word
character, or expands it into several of those (``İ`` → ``i`` + U+0307 when lowercasing
without stripping accents, Hangul syllables → jamo when stripping). :func:`code_point_table`
builds that function once for all 0x110000 code points, so the tokenizer's hot loop is a
table lookup. The underlying facts live in ``_unicode_data.py``, generated from the reference
by ``_gen_unicode.py``.

One known limit of the per-code-point view: NFD also reorders runs of combining marks by
combining class; after dropping Mn (strip_accents) only a few spacing marks (Mc) with a
non-zero combining class (musical symbols U+1D165..U+1D172) can still be reordered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_CODE_POINTS = 0x110000

# Classes of one normalised code point, as BertPreTokenizer sees it (also the low 3 bits of
# the tokenizer's packed table entries, see wordpiece.py).
WORD, ISOLATED, SPACE, DELETE, EXPAND = 0, 1, 2, 3, 4


def hangul_nfd(cp: int) -> tuple[int, ...] | None:
    """Canonical decomposition of a precomposed Hangul syllable (Unicode ch. 3.12), else None."""
    s = cp - 0xAC00
    if not 0 <= s < 11172:
        return None
    lead, vowel, trail = 0x1100 + s // 588, 0x1161 + (s % 588) // 28, s % 28
    return (lead, vowel) if trail == 0 else (lead, vowel, 0x11A7 + trail)


@dataclass(frozen=True)
class CodePointTable:
    """Normalisation + pre-tokenisation of every code point.

    Attributes:
        kind: (0x110000,) int8, one of WORD, ISOLATED, SPACE, DELETE, EXPAND.
        out: (0x110000,) int32, the normalised code point for WORD/ISOLATED entries
            (the code point itself unless lowercasing/stripping changed it); for EXPAND the
            index into ``expansions``.
        expansions: for each EXPAND entry, the list of (class, code point) it becomes, class
            being WORD, ISOLATED or SPACE (code point -1 for SPACE).
    """

    kind: np.ndarray
    out: np.ndarray
    expansions: tuple[tuple[tuple[int, int], ...], ...]


def _fill(arr: np.ndarray, ranges, value) -> None:
    for a, b in ranges:
        arr[a:b] = value


def _pre_class(cp: int, pre_space: np.ndarray, pre_punct: np.ndarray) -> int:
    return SPACE if pre_space[cp] else ISOLATED if pre_punct[cp] else WORD


def code_point_table(lowercase: bool, strip_accents: bool) -> CodePointTable:
    """The composed BertNormalizer + BertPreTokenizer behaviour for every code point."""
    from paretoml.text import _unicode_data as U

    pre_space = np.zeros(N_CODE_POINTS, bool)
    pre_punct = np.zeros(N_CODE_POINTS, bool)
    _fill(pre_space, U.PRE_SPACE, True)
    _fill(pre_punct, U.PRE_PUNCT, True)
    kind = np.full(N_CODE_POINTS, WORD, np.int8)
    kind[pre_punct] = ISOLATED
    kind[pre_space] = SPACE
    # clean_text and CJK spacing come first in the pipeline, so they override.
    _fill(kind, U.CLEAN_SPACE, SPACE)
    _fill(kind, U.CJK, ISOLATED)
    _fill(kind, U.CLEAN_DELETE, DELETE)
    kind[0xD800:0xE000] = DELETE  # lone surrogates never get here (the tokenizer rejects them)
    out = np.arange(N_CODE_POINTS, dtype=np.int32)

    changed: set[int] = set()
    if strip_accents:
        changed |= set(U.STRIP_ACCENTS) | set(range(0xAC00, 0xAC00 + 11172))
    if lowercase:
        changed |= set(U.LOWERCASE)
    cjk = np.zeros(N_CODE_POINTS, bool)
    _fill(cjk, U.CJK, True)
    expansions: list[tuple[tuple[int, int], ...]] = []
    for cp in sorted(changed):
        if kind[cp] in (DELETE, SPACE):  # cleaned away before strip/lowercase see it
            continue
        seq: tuple[int, ...] = (cp,)
        if strip_accents:
            seq = tuple(c for x in seq for c in (hangul_nfd(x) or U.STRIP_ACCENTS.get(x, (x,))))
        if lowercase:
            seq = tuple(c for x in seq for c in U.LOWERCASE.get(x, (x,)))
        items = tuple((_pre_class(c, pre_space, pre_punct), c) for c in seq)
        if cjk[cp]:  # " X " around the (possibly decomposed) ideograph
            items = ((SPACE, -1),) + items + ((SPACE, -1),)
        items = tuple((k, -1 if k == SPACE else c) for k, c in items)
        kind[cp], out[cp] = _simplify(items, expansions)
    return CodePointTable(kind, out, tuple(expansions))


def _simplify(items, expansions: list) -> tuple[int, int]:
    """(kind, out) for one code point's normalised items; appends to `expansions` if needed."""
    if not items:
        return DELETE, 0
    if len(items) == 1:
        k, c = items[0]
        return k, max(c, 0)
    if len(items) == 3 and items[0][0] == SPACE == items[2][0] and items[1][0] != SPACE:
        return ISOLATED, items[1][1]  # " X " is a one-character word, like punctuation
    if all(k == SPACE for k, _ in items):
        return SPACE, 0
    expansions.append(items)
    return EXPAND, len(expansions) - 1
