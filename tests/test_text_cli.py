"""`paretoml tokenize`: output formats, stdin, bad input."""

from __future__ import annotations

import io
import json
import sys

import pytest

from paretoml.cli import main

VOCAB = ["[UNK]", "[CLS]", "[SEP]", "hello", "world", "!", ",", "##s", "ist", "##anbul", "i"]


@pytest.fixture
def vocab(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return p


def run(capsys, *args):
    rc = main(["tokenize", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_tokenize_ids_tokens_jsonl(tmp_path, vocab, capsys):
    f = tmp_path / "in.txt"
    f.write_text("Hello, worlds!\nİstanbul\n\n", encoding="utf-8")
    rc, out, _ = run(capsys, "--vocab", vocab, "--lowercase", f)
    assert rc == 0 and out.splitlines() == ["3 6 4 7 5", "8 9", ""]
    rc, out, _ = run(capsys, "--vocab", vocab, "--lowercase", "--tokens", "--special", f)
    assert out.splitlines()[0] == "[CLS] hello , world ##s ! [SEP]"
    rc, out, _ = run(capsys, "--vocab", vocab, "--jsonl", f)  # cased: "Hello" is unknown
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0] == {"ids": [0, 6, 4, 7, 5], "tokens": ["[UNK]", ",", "world", "##s", "!"],
                       "offsets": [[0, 5], [5, 6], [7, 12], [12, 13], [13, 14]]}
    assert len(rows) == 3


def test_tokenize_reads_stdin(vocab, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello world\n")))
    rc, out, _ = run(capsys, "--vocab", vocab, "--threads", "1")
    assert rc == 0 and out == "3 4\n"


def test_tokenize_bad_utf8_names_the_line(tmp_path, vocab, capsys):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"hello\nworld \xff!\nhello\n")
    rc, out, err = run(capsys, "--vocab", vocab, f)
    assert rc == 1 and f"{f}:2: invalid UTF-8" in err and "--errors replace" in err
    assert out == "3\n"  # the lines before the bad one are written
    rc, out, _ = run(capsys, "--vocab", vocab, "--errors", "replace", f)
    assert rc == 0 and out.splitlines() == ["3", "4 5", "3"]  # U+FFFD is dropped, as in HF


def test_tokenize_errors(tmp_path, vocab, capsys):
    rc, _, err = run(capsys, "--vocab", tmp_path / "missing.txt", vocab)
    assert rc == 1 and "not found" in err
    rc, _, err = run(capsys, "--vocab", vocab, tmp_path / "missing.txt")
    assert rc == 1 and "no such file" in err
    rc, _, err = run(capsys, "--vocab", vocab, "--threads", "0", vocab)
    assert rc == 1 and "--threads" in err
    dup = tmp_path / "dup.txt"
    dup.write_text("[UNK]\na\na\n", encoding="utf-8")
    rc, _, err = run(capsys, "--vocab", dup, vocab)
    assert rc == 1 and "duplicate token" in err
