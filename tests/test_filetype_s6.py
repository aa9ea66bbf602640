"""Session 6 corpus rules: SubRip files that libmagic calls application/x-subrip, RTF written by
LibreOffice from real documents (the late generators and their split unit), a Debian package
and its -doc package as one project, and the session-6 package lists."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from paretoml.filetype import _generate, corpus
from paretoml.filetype.corpus import _name_label, _verify, split_unit

SRT = b"1\n00:00:01,000 --> 00:00:02,500\nHello there\n\n2\n00:00:03,000 --> 00:00:04,000\nBye now\n"


def test_srt_accepts_libmagics_subrip_mime_type():
    assert _verify("srt", Path("a.srt"), SRT, "application/x-subrip")
    assert _verify("srt", Path("a.srt"), SRT, "text/plain")
    # the extra MIME type is for srt alone: other text labels still refuse it
    assert not _verify("txt", Path("a.txt"), SRT, "application/x-subrip")
    assert not _verify("vtt", Path("a.vtt"), b"WEBVTT\n\n" + SRT, "application/x-subrip")
    # and the SubRip content rule still applies under that MIME type
    assert not _verify("srt", Path("a.srt"), b"just some words, no cues at all here\n", "application/x-subrip")


def test_rtf_by_name_and_content():
    assert _name_label(Path("/o/gen/rtf/pkg/a.rtf"), b"") == "rtf"
    good = b"{\\rtf1\\ansi\\deff4\\adeflang1025\n{\\fonttbl{\\f0\\froman Times New Roman;}}\n\\par Hello}\n"
    assert _verify("rtf", Path("a.rtf"), good, "text/rtf")
    assert not _verify("rtf", Path("a.rtf"), b"{\\fonttbl not an rtf header} hello hello\n", "text/rtf")
    assert not _verify("rtf", Path("a.rtf"), good, "application/octet-stream")


def test_rtf_split_unit_is_the_inputs_package():
    # an office file written from a real text already sits in its input's package folder
    assert _generate._pkg(Path("/tmp/c/gen/odt/ft_corpus_debs_ansible-core/18.odt")) == \
        "ft_corpus_debs_ansible-core"
    assert _generate._pkg(Path("/tmp/c/gen/docx/share_doc_bash/3.docx")) == "share_doc_bash"
    # an HTML manual: its Debian package, as every other generator groups its inputs
    assert _generate._pkg(Path("/tmp/ft_corpus/debs/apache2-doc/usr/share/doc/x.html")) == \
        "ft_corpus_debs_apache2-doc"
    assert corpus._source_of(Path("/o/gen/rtf/ft_corpus_debs_apache2-doc/x_0_1.rtf"), Path("/o"), {}) == \
        "gen:rtf/ft_corpus_debs_apache2-doc"


def test_late_generators_run_once_each_even_after_done(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(_generate, "_rtf", lambda base, docs, rng: calls.append(base) or 3)
    monkeypatch.setattr(_generate, "_rtf_inputs", lambda out, rng: [])
    out = tmp_path / "gen"
    out.mkdir()
    (out / ".done").write_text("ok\n")  # a corpus built before session 6
    _generate.generate_all(out)
    assert calls == [out] and (out / ".done-rtf").exists()
    _generate.generate_all(out)
    assert calls == [out]  # its marker keeps it from running again


def test_late_generator_failure_leaves_no_marker(tmp_path, monkeypatch):
    def boom(base, docs, rng):
        raise RuntimeError("soffice crashed")

    monkeypatch.setattr(_generate, "_rtf", boom)
    monkeypatch.setattr(_generate, "_rtf_inputs", lambda out, rng: [])
    (tmp_path / ".done").write_text("ok\n")
    _generate.generate_all(tmp_path)
    assert not (tmp_path / ".done-rtf").exists()  # a later run tries again


def test_rtf_without_libreoffice_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_generate.shutil, "which", lambda name: None)
    doc = tmp_path / "in.html"
    doc.write_text("<html><body><h1>Title</h1><p>text</p></body></html>")
    assert _generate._rtf(tmp_path / "gen", [doc], random.Random(0)) == 0
    assert not (tmp_path / "gen" / "rtf").exists()


@pytest.mark.skipif(not (shutil.which("soffice") or shutil.which("libreoffice")), reason="LibreOffice not installed")
def test_rtf_from_html_and_same_stem_inputs(tmp_path):
    docs = []
    for pkg in ("alpha-doc", "beta-doc"):  # both inputs are called index.html: outputs must not collide
        d = tmp_path / "c" / "debs" / pkg / "usr" / "share" / "doc" / pkg
        d.mkdir(parents=True)
        (d / "index.html").write_text(f"<html><body><h1>{pkg}</h1><p>Some <b>bold</b> words.</p></body></html>")
        docs.append(d / "index.html")
    assert _generate._rtf(tmp_path / "c" / "gen", docs, random.Random(0)) == 2
    out = sorted((tmp_path / "c" / "gen" / "rtf").glob("*/*.rtf"))
    assert len(out) == 2  # same stem, distinct outputs
    assert {p.parent.name for p in out} == {_generate._pkg(d) for d in docs}
    for p in out:
        data = p.read_bytes()
        assert data.startswith(b"{\\rtf1") and _verify("rtf", p, data[:65536], "text/rtf")


def test_debian_package_and_its_doc_package_are_one_project():
    assert split_unit("debs:texlive-fonts-recommended") == split_unit("debs:texlive-fonts-recommended-doc")
    assert split_unit("deb:texlive-fonts-recommended") == "deb:texlive-fonts-recommended-doc"
    assert split_unit("debs:texlive-lang-cjk") == "deb:texlive-lang-cjk"  # others unchanged


def test_session6_lists_are_new_and_fetched(tmp_path, monkeypatch):
    earlier_deb = set(corpus.DEBIAN_PACKAGES + corpus.EXTRA_DEBIAN_PACKAGES + corpus.MORE_DEBIAN_PACKAGES
                      + corpus.S5_DEBIAN_PACKAGES)
    earlier_npm = set(corpus.NPM_PACKAGES + corpus.EXTRA_NPM_PACKAGES + corpus.MORE_NPM_PACKAGES
                      + corpus.S5_NPM_PACKAGES)
    assert corpus.S6_DEBIAN_PACKAGES and not set(corpus.S6_DEBIAN_PACKAGES) & earlier_deb
    assert corpus.S6_NPM_PACKAGES and not set(corpus.S6_NPM_PACKAGES) & earlier_npm
    assert corpus.S6_PYPI_SDISTS and not set(corpus.S6_PYPI_SDISTS) & set(corpus.PYPI_SDISTS + corpus.S5_PYPI_SDISTS)
    assert len(set(corpus.S6_DEBIAN_PACKAGES)) == len(corpus.S6_DEBIAN_PACKAGES)

    from paretoml.cli import main

    got = {}
    monkeypatch.setattr(corpus, "fetch_debian", lambda pkgs, d: got.setdefault("deb", list(pkgs)))
    monkeypatch.setattr(corpus, "fetch_pypi", lambda pkgs, d: got.setdefault("pypi", list(pkgs)))
    monkeypatch.setattr(corpus, "fetch_debian_patches", lambda pkgs, d: None)
    monkeypatch.setattr(corpus, "fetch_windows_wheels", lambda pkgs, d: got.setdefault("whl", list(pkgs)))
    monkeypatch.setattr(corpus, "build_corpus", lambda *a, **k: {})
    import subprocess

    npm_calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: npm_calls.append(cmd[2]))
    rc = main(["filetype", "corpus", str(tmp_path / "c"), "--fetch", "--debs", str(tmp_path / "d"),
                   "--npm", str(tmp_path / "n"), "--pypi", str(tmp_path / "p"), "--no-generate"])
    assert rc == 0
    assert set(corpus.S6_DEBIAN_PACKAGES) <= set(got["deb"])
    assert set(corpus.S6_PYPI_SDISTS) <= set(got["pypi"])
    assert set(corpus.S6_NPM_PACKAGES) <= set(npm_calls)
    # session 7's lists come with the same --fetch
    assert set(corpus.S7_PYPI_SDISTS) <= set(got["pypi"]) and got["whl"] == list(corpus.S7_WINDOWS_WHEELS)
    assert not set(corpus.S7_PYPI_SDISTS) & set(corpus.PYPI_SDISTS + corpus.S5_PYPI_SDISTS + corpus.S6_PYPI_SDISTS)


def test_bench_session6_new_projects(tmp_path, load_bench):
    from paretoml.filetype.corpus import S5_DEBIAN_PACKAGES, S6_DEBIAN_PACKAGES, S6_NPM_PACKAGES, S6_PYPI_SDISTS

    bench = load_bench("bench_filetype")
    s6_deb, s5_deb = S6_DEBIAN_PACKAGES[0], S5_DEBIAN_PACKAGES[0]
    s6_npm = S6_NPM_PACKAGES[0].lstrip("@").replace("/", "-")
    assert "sqllineage" in S6_PYPI_SDISTS
    rows = [{"path": "/a", "label": "c", "source": f"debs:{s6_deb}", "split": "test"},
            {"path": "/b", "label": "sql", "source": f"debs:{s5_deb}", "split": "test"},
            {"path": "/c", "label": "css", "source": f"npm:{s6_npm}-2.0.0", "split": "test"},
            {"path": "/d", "label": "sql", "source": "pypi:sqllineage-1.5.9", "split": "test"},
            {"path": "/e", "label": "diff", "source": "debsrc:bash", "split": "test"},  # session 5's patches
            {"path": "/f", "label": "rtf", "source": "gen:rtf/ft_corpus_debs_x", "split": "test"}]  # generated
    assert bench.new_units(rows, 6) == {f"deb:{s6_deb}", f"js:{s6_npm}", "py:sqllineage"}
    assert bench.new_units(rows, 5) == {f"deb:{s5_deb}", "debsrc:bash"}
    (tmp_path / "manifest.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    got = bench.corpus_split(tmp_path, "test", tiny=False, new_only=True, session=6)
    assert sorted(p for p, _ in got) == ["/a", "/c", "/d"]


def test_label_split_by_file_before_stays_split_by_file(tmp_path):
    """fortran had 2 projects (split by file); a third project must not re-split it by source,
    which moved old train files into test (the old model would be scored on its training files)."""
    import json

    from paretoml.filetype.corpus import CorpusConfig, _assign_splits, _previous_splits

    old = [{"path": f"/a/{i}.f90", "label": "fortran", "source": "deb:cmake-data" if i % 2 else "py:numpy"}
           for i in range(40)]
    _assign_splits(old, CorpusConfig(seed=3))
    assert {r["split_by"] for r in old} == {"file"}
    man = tmp_path / "manifest.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in old))
    new = [dict(path=r["path"], label=r["label"], source=r["source"]) for r in old]
    new += [{"path": f"/b/{i}.f90", "label": "fortran", "source": f"debs:gfortran-pkg{i % 3}"} for i in range(12)]
    _assign_splits(new, CorpusConfig(seed=3), _previous_splits(man))
    before = {r["path"]: r["split"] for r in old}
    assert all(r["split"] == before[r["path"]] for r in new if r["path"] in before)
    assert {r["split_by"] for r in new} == {"file"}
    # without a previous manifest the same rows (3+ projects) are split by source
    fresh = [dict(path=r["path"], label=r["label"], source=r["source"]) for r in new]
    _assign_splits(fresh, CorpusConfig(seed=3))
    assert {r["split_by"] for r in fresh} == {"source"}


def test_rtf_generator_places_each_output_under_its_inputs_project(tmp_path, monkeypatch):
    """`_rtf` with a stand-in converter (a script that writes one .rtf per input into --outdir, as
    soffice --convert-to does): names, projects and the count; no converter: nothing, no error."""
    import random
    import stat

    from paretoml.filetype import _generate as gen

    fake = tmp_path / "soffice"
    fake.write_text("#!/usr/bin/env python3\nimport sys, pathlib\na = sys.argv\n"
                    "out = pathlib.Path(a[a.index('--outdir') + 1])\n"
                    "for f in a[a.index('--outdir') + 2:]:\n"
                    "    (out / (pathlib.Path(f).stem + '.rtf')).write_text('{\\\\rtf1\\\\ansi hi}')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    debs = tmp_path / "debs" / "pkg-a" / "usr" / "share" / "doc"
    debs.mkdir(parents=True)
    docs = [debs / "index.html", debs / "other.html"]
    for d in docs:
        d.write_text("<html><body>hello</body></html>")
    base = tmp_path / "gen"
    monkeypatch.setattr(gen, "_soffice", lambda: str(fake))
    monkeypatch.setattr(gen, "_pkg", lambda p: "pkg-a")
    assert gen._rtf(base, docs, random.Random(0)) == 2
    out = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert out == ["rtf/pkg-a/index_0_0.rtf", "rtf/pkg-a/other_0_1.rtf"]
    assert (base / out[0]).read_text().startswith("{\\rtf1")
    monkeypatch.setattr(gen, "_soffice", lambda: None)
    assert gen._rtf(tmp_path / "gen2", docs, random.Random(0)) == 0 and not (tmp_path / "gen2").exists()
