"""`paretoml tokenize`: Fast WordPiece over lines of text files or stdin."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_BATCH_LINES = 8192


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="BERT WordPiece tokenization of text lines (Fast WordPiece)",
                       description="Tokenize each line of the FILEs (stdin when none) with a BERT "
                                   "vocab.txt; ids are identical to HF tokenizers' BertNormalizer + "
                                   "BertPreTokenizer + WordPiece. One output line per input line.")
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="UTF-8 text files ('-' = stdin)")
    p.add_argument("--vocab", required=True, type=Path, help="BERT vocab.txt (one token per line)")
    p.add_argument("--lowercase", action="store_true", help="uncased BERT: lowercase and strip accents")
    p.add_argument("--no-strip-accents", dest="strip_accents", action="store_const", const=False,
                   default=None, help="keep accents even with --lowercase")
    p.add_argument("--unk-token", default="[UNK]")
    p.add_argument("--special", action="store_true", help="add [CLS] ... [SEP] around every line")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--ids", dest="show", action="store_const", const="ids", help="print ids (default)")
    what.add_argument("--tokens", dest="show", action="store_const", const="tokens", help="print tokens")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line: ids, tokens, offsets")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict",
                   help="invalid UTF-8: stop with the line number (strict) or use U+FFFD (replace)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.set_defaults(func=_run, show="ids")


def _lines(path: Path, errors: str):
    """Yield decoded lines (without the newline) of a file or stdin; strict decoding names the line."""
    name = "<stdin>" if str(path) == "-" else str(path)
    f = sys.stdin.buffer if str(path) == "-" else open(path, "rb")
    try:
        for no, raw in enumerate(f, 1):
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            try:
                yield raw.decode("utf-8", errors)
            except UnicodeDecodeError as e:
                raise ValueError(f"{name}:{no}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start}); "
                                 "fix the file or pass --errors replace") from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _run(args) -> int:
    from paretoml.text import WordPieceTokenizer

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    for f in args.files:
        if str(f) != "-" and not f.is_file():
            raise FileNotFoundError(f"no such file: {f}")
    tok = WordPieceTokenizer.from_file(args.vocab, lowercase=args.lowercase, strip_accents=args.strip_accents,
                                       unk_token=args.unk_token, add_special_tokens=args.special)
    out = sys.stdout
    batch: list[str] = []

    def flush() -> None:
        for enc in tok.encode_batch(batch, num_threads=args.threads):
            if args.jsonl:
                out.write(json.dumps({"ids": enc.ids.tolist(), "tokens": enc.tokens,
                                      "offsets": enc.offsets.tolist()}, ensure_ascii=False))
            elif args.show == "tokens":
                out.write(" ".join(enc.tokens))
            else:
                out.write(" ".join(map(str, enc.ids.tolist())))
            out.write("\n")
        batch.clear()

    try:
        for path in args.files or [Path("-")]:
            for line in _lines(path, args.errors):
                batch.append(line)
                if len(batch) >= _BATCH_LINES:
                    flush()
    finally:  # lines before a bad one are still written
        flush()
    out.flush()
    return 0
