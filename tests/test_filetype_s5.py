"""Session 5 corpus rules: new labels (Magika's names), their content checks, Objective-C
refinement, Debian source patches as diffs, PyPI project aliases, the bench's new-projects
subset and its all-models-know macro-F1."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from paretoml.filetype import corpus
from paretoml.filetype.corpus import _name_label, _refine_label, _verify, split_unit
from paretoml.filetype.labels import KNOWLEDGE_BASE

DIFF = (b"Description: fix the build\nAuthor: someone\n\n--- a/src/x.c\n+++ b/src/x.c\n@@ -1,3 +1,3 @@\n"
        b" int a;\n-int b;\n+long b;\n")


def test_new_labels_use_magika_names_and_gradle_is_not_groovy():
    for lab in ("swift", "objectivec", "gradle", "groovy", "solidity", "erb", "vtt", "srt", "kotlin", "vue", "ocaml",
                "cs", "diff", "dockerfile", "awk", "ipynb", "wasm", "pebin", "rtf"):
        assert lab in KNOWLEDGE_BASE, lab
    assert KNOWLEDGE_BASE["gradle"].extensions == ("gradle",)
    assert "gradle" not in KNOWLEDGE_BASE["groovy"].extensions
    assert KNOWLEDGE_BASE["objectivec"].extensions == ("m", "mm")


@pytest.mark.parametrize("path,label", [
    ("/o/debsrc/bash/debian/patches/fix-build", "diff"),  # no extension: a Debian patch all the same
    ("/o/npm/x/fix.patch", "diff"), ("/o/npm/x/a.diff", "diff"),
    ("/o/npm/x/Dockerfile", "dockerfile"), ("/o/npm/x/Dockerfile.alpine", "dockerfile"),
    ("/o/npm/x/Dockerfile.md", "markdown"),  # the docs about a Dockerfile are not one
    ("/o/debs/x/lib/mono/4.5/System.dll", "pebin"), ("/o/debs/x/usr/lib/shim/shimx64.efi", "pebin"),
    ("/o/npm/x/Token.sol", "solidity"), ("/o/npm/x/ios/A.swift", "swift"), ("/o/npm/x/ios/A.mm", "objectivec"),
    ("/o/npm/x/ios/A.m", "matlab"),  # by name; `_refine_label` settles Objective-C by content
    ("/o/npm/x/android/build.gradle", "gradle"), ("/o/npm/x/android/build.gradle.kts", "kotlin"),
    ("/o/debs/x/views/a.html.erb", "erb"), ("/o/pypi/x/t/a.vtt", "vtt"), ("/o/pypi/x/t/a.srt", "srt"),
    ("/o/debs/x/lib/ocaml/list.mli", "ocaml"), ("/o/pypi/x/src/Runtime.cs", "cs"), ("/o/pypi/x/nb.ipynb", "ipynb"),
])
def test_name_label_session5(path, label):
    assert _name_label(Path(path), b"") == label


def test_diff_needs_hunks_not_just_the_name():
    assert _verify("diff", Path("x.patch"), DIFF, "text/x-diff")
    git = (b"From 1234 Mon Sep 17 00:00:00 2001\nSubject: x\n---\ndiff --git a/f b/f\nindex 1..2 100644\n"
           b"--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n")
    assert _verify("diff", Path("0001-x.patch"), git, "text/x-diff")
    assert not _verify("diff", Path("x.patch"), b"This patch series was dropped upstream.\n" * 3, "text/plain")
    assert not _verify("diff", Path("x.patch"), b"--- a/f\nno plus line here\n@@ -1 +1 @@\n" * 2, "text/plain")


@pytest.mark.parametrize("label,good,bad", [
    ("dockerfile", b"# syntax=docker/dockerfile:1\n\nARG V=1\nFROM debian:12\nRUN true\n",
     b"This folder holds the Dockerfile docs.\nSee README.\n"),
    ("ipynb", b'{\n "cells": [\n  {"cell_type": "code", "source": []}\n ],\n "nbformat": 4\n}\n',
     b'{"name": "x", "version": "1.0.0", "main": "index.js"}\n'),
    ("vtt", b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nHello there\n", b"1\n00:00:01,000 --> 00:00:02,000\nHi\n"),
    ("srt", b"1\r\n00:00:01,000 --> 00:00:02,500\r\nHello there\r\n\r\n2\r\n00:00:03,000 --> 00:00:04,000\r\nBye\r\n",
     b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nHello there\n"),
    ("solidity", b"// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\n\ncontract Token {}\n",
     b"// just a comment about solidity and contracts\n"),
    ("cs", b"using System;\nnamespace Demo\n{\n    public class A { }\n}\n", b"int main(void) { return 0; }\n// cs\n"),
    ("erb", b"<h1><%= @title %></h1>\n<p>Welcome to the page</p>\n", b"<h1>Title</h1>\n<p>No embedded ruby</p>\n"),
    ("vue", b"<template>\n  <div>{{ msg }}</div>\n</template>\n<script>\nexport default {}\n</script>\n",
     b"export default { name: 'NotASingleFileComponent' }\n"),
    ("rtf", b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times;}}\\f0 Hello world}\n", b"Hello world, plain text only\n"),
])
def test_text_rules_accept_the_type_and_reject_lookalikes(label, good, bad):
    mime = "application/json" if label == "ipynb" else ("text/rtf" if label == "rtf" else "text/plain")
    assert _verify(label, Path("f"), good, mime)
    assert not _verify(label, Path("f"), bad, "text/plain")


def test_objective_c_refinement():
    objc = b"// Copyright\n\n#import <Foundation/Foundation.h>\n\n@implementation Foo\n@end\n"
    header = b"/* h */\nNS_ASSUME_NONNULL_BEGIN\n@interface Foo : NSObject\n@end\n"
    assert _refine_label("matlab", Path("/x/ios/Foo.m"), "text/x-objective-c", objc) == "objectivec"
    octave = b"function y = f(x)\n  y = x;\nend\n"
    assert _refine_label("matlab", Path("/x/octave/f.m"), "text/plain", octave) == "matlab"
    assert _refine_label("c", Path("/x/ios/Foo.h"), "text/x-objective-c", header) == "objectivec"
    assert _refine_label("c", Path("/x/include/foo.h"), "text/x-c", b"#include <stdio.h>\nint f(void);\n") == "c"
    assert _refine_label("c", Path("/x/include/foo.h"), "text/x-c++", b"#include <vector>\nclass A {};\n") == "cpp"
    assert _refine_label("python", Path("/x/a.m"), "text/plain", objc) == "python"  # only .m/.h are ambiguous


def test_pypi_sdists_join_their_debian_projects():
    assert split_unit("pypi:oslo_config-10.7.0") == split_unit("debs:python-oslo.config-doc")
    assert split_unit("pypi:webvtt_py-0.6.0") == split_unit("debs:python-webvtt-doc")
    assert split_unit("pypi:yamllint-1.38.0") == split_unit("debs:yamllint")
    assert split_unit("pypi:ansible_lint-26.10.1") == split_unit("debs:ansible-lint")
    assert split_unit("pypi:flask-3.1.3") == "py:flask"  # unchanged for the others


def _debian_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_fetch_and_unpack_debian_patches(tmp_path, monkeypatch):
    pool = tmp_path / "pool"
    pool.mkdir()
    good = _debian_tar({"debian/patches/series": b"fix.patch\n", "debian/patches/fix.patch": DIFF,
                        "debian/patches/no-ext": DIFF, "debian/rules": b"#!/usr/bin/make -f\n"})
    (pool / "foo_1.0-1.debian.tar.xz").write_bytes(good)
    (pool / "bar_2.0-1.debian.tar.xz").write_bytes(b"tampered")
    sha = {"foo": hashlib.sha256(good).hexdigest(), "bar": hashlib.sha256(b"original").hexdigest()}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    # a stand-in apt-get: `update` is a no-op; `source --print-uris P` lists P's .dsc and .debian.tar.xz
    (bin_dir / "apt-get").write_text(f"""#!/bin/sh
for a in "$@"; do case "$a" in -o*) ;; *) set -- "$@" "$a" ;; esac; shift; done
echo "$*" >> {calls}
[ "$1" = source ] || exit 0
case "$3" in
  foo) v=1.0-1; s={sha['foo']} ;;
  bar) v=2.0-1; s={sha['bar']} ;;
  *) exit 100 ;;
esac
echo "'file://{pool}/$3_$v.dsc' $3_$v.dsc 10 SHA256:00"
echo "'file://{pool}/$3_$v.debian.tar.xz' $3_$v.debian.tar.xz 99 SHA256:$s"
""")
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    dest = tmp_path / "debsrc"
    corpus.fetch_debian_patches(["foo", "bar", "nosuch", "foo"], dest)
    assert sorted(p.name for p in dest.glob("*.tar.xz")) == ["foo_1.0-1.debian.tar.xz"]  # bar: checksum mismatch
    assert calls.read_text().splitlines()[0] == "update"
    calls.write_text("")
    corpus.fetch_debian_patches(["foo"], dest)  # already there: apt is not asked again
    assert calls.read_text() == ""
    out = tmp_path / "corpus"
    (out / "debsrc" / "foo.partial" / "debian").mkdir(parents=True)  # left by an interrupted run
    (out / "debsrc" / "foo.partial" / "debian" / "junk").write_bytes(b"half")
    corpus._unpack_patches(dest, out)
    assert not (out / "debsrc" / "foo.partial").exists()
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["debsrc/foo/debian/patches/fix.patch", "debsrc/foo/debian/patches/no-ext"]  # no series, no rules
    assert {corpus._source_of(out / g, out, {}) for g in got} == {"debsrc:foo"}
    assert all(_name_label(out / g, b"") == "diff" for g in got)


def test_bench_session5_new_projects_and_common_types(tmp_path, load_bench):
    from paretoml.filetype.corpus import MORE_DEBIAN_PACKAGES, S5_DEBIAN_PACKAGES, S5_NPM_PACKAGES, S5_PYPI_SDISTS

    bench = load_bench("bench_filetype")
    s5_deb, s4_deb = S5_DEBIAN_PACKAGES[0], MORE_DEBIAN_PACKAGES[0]
    s5_npm = S5_NPM_PACKAGES[0].lstrip("@").replace("/", "-")
    assert "sqlglot" in S5_PYPI_SDISTS and "yamllint" in S5_PYPI_SDISTS
    rows = [{"path": "/a", "label": "sql", "source": f"debs:{s5_deb}", "split": "test"},
            {"path": "/b", "label": "c", "source": f"debs:{s4_deb}", "split": "test"},
            {"path": "/c", "label": "swift", "source": f"npm:{s5_npm}-8.0.1", "split": "test"},
            {"path": "/d", "label": "sql", "source": "pypi:sqlglot-30.31.0", "split": "test"},
            {"path": "/e", "label": "yaml", "source": "pypi:yamllint-1.38.0", "split": "test"},
            {"path": "/f", "label": "yaml", "source": "debs:yamllint", "split": "test"},  # a session-4 package
            {"path": "/g", "label": "diff", "source": "debsrc:bash", "split": "test"}]
    assert bench.new_units(rows, 5) == {f"deb:{s5_deb}", f"js:{s5_npm}", "py:sqlglot", "debsrc:bash"}
    assert bench.new_units(rows, 4) == {f"deb:{s4_deb}"}
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = bench.corpus_split(tmp_path, "test", tiny=False, new_only=True, session=5)
    assert sorted(p for p, _ in got) == ["/a", "/c", "/d", "/g"]


def test_bench_macro_f1_over_common_types_leaves_out_unknown_labels(load_bench):
    """The 'types all models know' macro-F1, by hand: python has 1 of its 2 files found and 1
    false alarm (precision 1/2, recall 1/2, F1 1/2), json F1 = 1; swift (a type one model lacks)
    and a label without test files are left out, not averaged in as zeros."""
    bench = load_bench("bench_filetype")
    truth = ["python", "python", "json", "swift", "c"]
    pred = ["python", "c", "json", "txt", "python"]
    res = bench.prf(truth, pred, ["python", "json", "swift", "yaml"])
    assert res["python"]["precision"] == 0.5 and res["python"]["recall"] == 0.5
    f1, n = bench.macro_f1_over(res, ["python", "json", "yaml"])
    assert n == 2 and f1 == (0.5 + 1.0) / 2
    f1_all, n_all = bench.macro_f1_over(res, ["python", "json", "swift", "yaml"])
    assert n_all == 3 and abs(f1_all - 0.5) < 1e-12  # swift's miss counts only when it is in the list
    assert bench.macro_f1_over(res, ["yaml"])[1] == 0
