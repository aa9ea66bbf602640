"""Session 7: more real writers for binary containers and audio (Info-ZIP, p7zip, lame, flac,
oggenc, opusenc, sox, espeak-ng, LibreOffice), big-endian WAV, the split unit of re-encoded
generated files, and warm-start training (fine-tuning the shipped model on a changed corpus)."""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from paretoml.filetype import _generate
from paretoml.filetype.corpus import _source_of, _verify, split_unit
from paretoml.filetype.model import ModelConfig, read_safetensors

# ----------------------------------------------------------------------------- corpus rules


def _wav(big_endian: bool) -> bytes:
    import struct

    e = ">" if big_endian else "<"
    fmt = struct.pack(f"{e}HHIIHH", 1, 1, 8000, 16000, 2, 16)
    data = struct.pack(f"{e}8h", *range(8))
    body = b"WAVE" + b"fmt " + struct.pack(f"{e}I", 16) + fmt + b"data" + struct.pack(f"{e}I", len(data)) + data
    return (b"RIFX" if big_endian else b"RIFF") + struct.pack(f"{e}I", len(body)) + body


def test_big_endian_wav_is_accepted_by_its_own_rule():
    rifx = _wav(True)
    assert _verify("wav", Path("a.wav"), rifx, "application/octet-stream")  # libmagic names no MIME type
    assert _verify("wav", Path("a.wav"), _wav(False), "audio/x-wav")
    # the rule needs both the RIFX and the WAVE tag, and is for wav only
    assert not _verify("wav", Path("a.wav"), b"RIFX\0\0\0\0AVI " + rifx[12:], "application/octet-stream")
    assert not _verify("aiff", Path("a.aiff"), rifx, "application/octet-stream")


def test_reencoded_generated_files_keep_their_inputs_package():
    # a speech WAV written from a text of package P, then encoded again: still project P
    speech = Path("/o/gen/aud_speech/ft_corpus_debs_ansible/3.wav")
    assert _generate._pkg(speech) == "ft_corpus_debs_ansible"
    assert _generate._pkg(Path("/tmp/ft_corpus/debs/ansible/usr/x.txt")) == "ft_corpus_debs_ansible"  # as before
    out = _generate._out(Path("/o/gen"), "aud7_lame", speech, "3.mp3")
    assert out == Path("/o/gen/aud7_lame/ft_corpus_debs_ansible/3.mp3")
    assert split_unit(_source_of(out, Path("/o"), {})) == "gen:aud7_lame/ft_corpus_debs_ansible"


def test_late_generators_run_in_order_once_each(tmp_path, monkeypatch):
    calls = []
    for fn in set(_generate._LATE.values()):
        monkeypatch.setattr(_generate, fn, lambda out, rng, fn=fn: calls.append(fn) or 1)
    (tmp_path / ".done").write_text("ok\n")
    (tmp_path / ".done-rtf").write_text("ok\n")  # a corpus built in session 6
    _generate.generate_all(tmp_path)
    assert calls == ["_late_audio", "_late_zip", "_office_lo"]
    assert all((tmp_path / f".done-{n}").exists() for n in _generate._LATE)
    _generate.generate_all(tmp_path)
    assert len(calls) == 3


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "debs" / "pkg" / "usr" / "share" / "doc" / "pkg"
    d.mkdir(parents=True)
    for i in range(4):
        (d / f"f{i}.txt").write_text(f"line {i}\n" * (50 + i))
    (d / "sub").mkdir()  # folders are not members
    return d


@pytest.mark.skipif(not (shutil.which("zip") and shutil.which("7z")), reason="zip / p7zip not installed")
def test_zip_writers_write_real_zips_that_pass_the_content_check(tmp_path):
    from paretoml.filetype.corpus import _magic

    d = _folder(tmp_path)
    n = sum(_generate._zip_writers(tmp_path / f"gen{s}", [d], random.Random(s)) for s in range(6))
    out = sorted(tmp_path.glob("gen*/*/*/*.zip"))
    assert n == len(out) == 12 and {p.parent.parent.name for p in out} == {"zip_infozip", "zip_7z"}
    before = {p: len(zipfile.ZipFile(p).namelist()) for p in tmp_path.glob("gen0/*/*/*.zip")}
    assert _generate._zip_writers(tmp_path / "gen0", [d], random.Random(0)) == 2  # a rerun rewrites, never appends
    assert {p: len(zipfile.ZipFile(p).namelist()) for p in tmp_path.glob("gen0/*/*/*.zip")} == before
    magic = _magic()
    for p in out:
        data = p.read_bytes()
        assert data[:4] == b"PK\x03\x04"
        assert _verify("zip", p, data[:65536], magic.from_buffer(data[:65536]))
        names = zipfile.ZipFile(p).namelist()
        assert {"f0.txt", "f3.txt"} <= {Path(x).name for x in names}  # the folder's files are in it


@pytest.mark.skipif(not all(shutil.which(t) for t in ("ffmpeg", "lame", "flac", "oggenc", "opusenc", "sox")),
                    reason="audio encoders not installed")
def test_audio_encoders_write_every_format(tmp_path):
    from paretoml.filetype.corpus import _magic

    src = tmp_path / "debs" / "snd" / "usr" / "a.wav"
    src.parent.mkdir(parents=True)
    t = np.arange(8000 * 2) / 8000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    import wave

    with wave.open(str(src), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    assert _generate._audio_encoders(tmp_path / "gen", [src], random.Random(0)) == 6
    magic = _magic()
    want = {".mp3": "mp3", ".flac": "flac", ".ogg": "ogg", ".opus": "ogg", ".wav": "wav", ".aiff": "aiff"}
    got = sorted((tmp_path / "gen").rglob("*.*"))
    assert {p.suffix for p in got} == set(want)
    for p in got:
        data = p.read_bytes()[:65536]
        assert _verify(want[p.suffix], p, data, magic.from_buffer(data)), p


# ----------------------------------------------------------------------------- warm start

def _arrays(labels: list[str], n: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny training arrays (random bytes; the tests below check plumbing, not quality)."""
    rng = np.random.default_rng(seed)
    k = len(labels) * n
    return {"head": rng.integers(0, 256, (k, 1024), dtype=np.uint8), "head_len": np.full(k, 64, np.int16),
            "tail": rng.integers(0, 256, (k, 1024), dtype=np.uint8), "tail_len": np.full(k, 64, np.int16),
            "label": np.repeat(np.arange(len(labels)), n).astype(np.int16), "label_names": np.array(labels),
            "split": np.tile(np.array([0, 0, 1], np.uint8), k // 3 + 1)[:k], "is_text": np.zeros(k, np.uint8)}


MC = ModelConfig(window=64, embed_dim=4, hidden=8, hidden2=8)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    pytest.importorskip("torch")
    from paretoml.filetype.train import TrainConfig, train_arrays

    out = tmp_path_factory.mktemp("base")
    train_arrays(_arrays(["gif", "png", "zip"]), out, TrainConfig(model=MC, epochs=2, min_train=1, threads=1))
    return out


def test_warm_start_copies_weights_and_matches_output_rows_by_label(base_model):
    from paretoml.filetype.train import _torch_model, _warm_start

    old = read_safetensors(base_model / "model.safetensors")
    old_labels = json.loads((base_model / "model.json").read_text())["labels"]
    labels = ["png", "tar", "zip"]  # one label dropped, one new, others moved
    m = _torch_model(MC, len(labels))
    fresh = m.head.weight.detach().clone()
    assert _warm_start(m, base_model, MC, labels) == 2
    new = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    for k, v in old.items():
        if not k.startswith("head."):
            np.testing.assert_array_equal(new[k], v.astype(np.float32))
    for i, lab in enumerate(labels):
        if lab in old_labels:
            np.testing.assert_array_equal(new["head.weight"][i], old["head.weight"][old_labels.index(lab)])
            np.testing.assert_array_equal(new["head.bias"][i], old["head.bias"][old_labels.index(lab)])
        else:
            np.testing.assert_array_equal(new["head.weight"][i], fresh[i].numpy())


def test_warm_start_with_a_negligible_step_keeps_the_model(base_model, tmp_path):
    from paretoml.filetype.train import TrainConfig, train_arrays

    train_arrays(_arrays(["gif", "png", "zip"], seed=1), tmp_path,
                 TrainConfig(model=MC, epochs=1, min_train=1, threads=1, lr=1e-12, init_from=str(base_model)))
    a, b = read_safetensors(base_model / "model.safetensors"), read_safetensors(tmp_path / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k].astype(np.float32), a[k].astype(np.float32), atol=1e-6)


def test_warm_start_refuses_another_architecture_or_a_missing_model(base_model, tmp_path):
    from paretoml.filetype.train import TrainConfig, _torch_model, _warm_start

    other = ModelConfig(window=64, embed_dim=4, hidden=16, hidden2=8)
    with pytest.raises(ValueError, match="same architecture"):
        _warm_start(_torch_model(other, 3), base_model, other, ["gif", "png", "zip"])
    with pytest.raises(FileNotFoundError, match="no model.json"):
        TrainConfig(init_from=str(tmp_path / "nowhere"))


def test_cli_train_passes_init_from(tmp_path, monkeypatch):
    from paretoml.cli import main
    from paretoml.filetype import train

    got = {}
    monkeypatch.setattr(train, "train_model", lambda corpus, out, cfg: got.setdefault("cfg", cfg) and
                        {"labels": [], "val_accuracy": 0, "val_macro_f1": 0, "train_seconds": 0})
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("{}")
    assert main(["filetype", "train", str(tmp_path / "c.npz"), "--out", str(tmp_path / "o"),
                 "--init-from", str(tmp_path / "m")]) == 0
    assert got["cfg"].init_from == str(tmp_path / "m")


# ----------------------------------------------------------------------------- Windows wheels

def test_only_the_pe_members_of_a_wheel_are_unpacked(tmp_path):
    from paretoml.filetype.corpus import _name_label, _unpack

    pypi = tmp_path / "dl"
    pypi.mkdir()
    pe = b"MZ" + b"\0" * 62
    with zipfile.ZipFile(pypi / "demo-1.0-cp311-cp311-win_amd64.whl", "w") as z:
        z.writestr("demo/_speedups.cp311-win_amd64.pyd", pe)
        z.writestr("demo/libs/helper.dll", pe)
        z.writestr("demo-1.0.data/scripts/tool.exe", pe)
        z.writestr("demo/__init__.py", "x = 1\n")  # sources repeat the installed project: not taken
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
    (pypi / "broken-1.0-cp311-cp311-win32.whl").write_bytes(b"not a zip")
    _unpack(None, None, tmp_path / "c", pypi)
    got = sorted(p.name for p in (tmp_path / "c" / "pypi" / "demo-1.0-cp311-cp311-win_amd64").iterdir())
    assert got == sorted(["demo-1.0.data__scripts__tool.exe", "demo__libs__helper.dll",
                          "demo___speedups.cp311-win_amd64.pyd"])
    assert all(_name_label(Path(x), pe) == "pebin" for x in got)
    assert not (tmp_path / "c" / "pypi" / "broken-1.0-cp311-cp311-win32").exists()  # skipped, no half folder
    assert not list((tmp_path / "c" / "pypi").glob("*.partial"))
    # all platforms of one project are one split unit, and the same as its sdist's
    assert split_unit("pypi:demo-1.0-cp311-cp311-win_amd64") == split_unit("pypi:demo-1.0-cp311-cp311-win32") == \
        split_unit("pypi:demo-1.0") == "py:demo"


def test_fetch_windows_wheels_asks_pip_per_platform_and_drops_big_wheels(tmp_path, monkeypatch):
    from paretoml.filetype import corpus

    calls = []

    def fake_run(cmd, **kw):
        name, plat = cmd[cmd.index("-d") - 1], cmd[cmd.index("--platform") + 1]
        calls.append((name, plat))
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / f"{name}-1.0-cp311-cp311-{plat}.whl").write_bytes(b"x" * (2 << 20 if name == "big" else 10))

    monkeypatch.setattr(corpus.subprocess, "run", fake_run)
    (tmp_path / "have-2.0-cp311-cp311-win32.whl").write_bytes(b"x")
    corpus.fetch_windows_wheels(["have", "big"], tmp_path, platforms=("win_amd64", "win32"), max_mb=1)
    assert calls == [("have", "win_amd64"), ("big", "win_amd64"), ("big", "win32")]  # win32 'have' was there
    assert sorted(f.name for f in tmp_path.glob("*.whl")) == ["have-1.0-cp311-cp311-win_amd64.whl",
                                                                "have-2.0-cp311-cp311-win32.whl"]


def test_bench_session7_new_projects_are_the_new_writers_and_wheels(load_bench):
    bench = load_bench("bench_filetype")
    rows = [{"label": "mp3", "source": "gen:aud7_lame/ft_corpus_debs_ansible"},
            {"label": "zip", "source": "gen:zip_7z/ft_corpus_debs_ansible"},
            {"label": "docx", "source": "gen:lo_docx/ft_corpus_debs_gnulib"},
            {"label": "docx", "source": "gen:docx/ft_corpus_debs_gnulib"},  # python-docx: an earlier writer
            {"label": "pebin", "source": "pypi:ruff-0.15.0-py3-none-win_arm64"},
            {"label": "pebin", "source": "pypi:pyyaml-6.0.4-cp311-cp311-win32"},
            {"label": "python", "source": "py:pyyaml"},  # ... whose project is also installed here: not new
            {"label": "zip", "source": "gen:zip/share_icons_Adwaita"}]
    assert bench.new_units(rows, 7) == {"gen:aud7_lame/ft_corpus_debs_ansible", "gen:zip_7z/ft_corpus_debs_ansible",
                                        "gen:lo_docx/ft_corpus_debs_gnulib", "py:ruff"}
    assert bench.new_units(rows, 6) == set()


def test_bench_byte_compiles_paretoml_before_timing_the_cold_start(load_bench):
    import importlib.util
    import os

    import paretoml.filetype.detector as det

    bench = load_bench("bench_filetype")
    assert bench.compile_bytecode()
    pyc = importlib.util.cache_from_source(det.__file__)
    assert os.path.exists(pyc) and os.path.getmtime(pyc) >= os.path.getmtime(det.__file__)


def test_encoder_output_reaches_the_corpus_whole_or_not_at_all(tmp_path):
    import sys

    tmp, dst = tmp_path / "t" / "out.bin", tmp_path / "gen" / "x" / "p" / "0.bin"
    tmp.parent.mkdir()
    dst.parent.mkdir(parents=True)
    # a writer that fails after writing part of its output: nothing reaches the corpus, no leftover
    fail = [sys.executable, "-c", f"open({str(tmp)!r}, 'wb').write(b'half'); raise SystemExit(1)"]
    assert not _generate._run_atomic(fail, tmp, dst)
    assert not dst.exists() and not tmp.exists()
    ok = [sys.executable, "-c", f"open({str(tmp)!r}, 'wb').write(b'whole file')"]
    assert _generate._run_atomic(ok, tmp, dst) and dst.read_bytes() == b"whole file" and not tmp.exists()
    # a writer that exits 0 but writes nothing does not count either
    assert not _generate._run_atomic([sys.executable, "-c", "pass"], tmp, tmp_path / "gen" / "x" / "p" / "1.bin")
    assert not (tmp_path / "gen" / "x" / "p" / "1.bin").exists()


@pytest.mark.skipif(not (shutil.which("soffice") or shutil.which("libreoffice")), reason="LibreOffice not installed")
def test_libreoffice_writes_docx_that_passes_the_content_check(tmp_path):
    from paretoml.filetype.corpus import _magic

    d = tmp_path / "c" / "debs" / "alpha-doc" / "usr" / "share" / "doc"
    d.mkdir(parents=True)
    (d / "index.html").write_text("<html><body><h1>Alpha</h1><p>Some <b>bold</b> words.</p></body></html>")
    assert _generate._soffice_convert(tmp_path / "c" / "gen", [d / "index.html"], "docx", "lo_docx") == 1
    (out,) = (tmp_path / "c" / "gen" / "lo_docx").glob("*/*.docx")
    assert out.parent.name == _generate._pkg(d / "index.html")
    data = out.read_bytes()[:65536]
    assert _verify("docx", out, data, _magic().from_buffer(data))
