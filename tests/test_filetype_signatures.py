"""Signature rules (`paretoml.filetype.signatures`) for formats outside the model's labels."""

import shutil
import struct
import subprocess

import pytest

from paretoml.filetype import Detector
from paretoml.filetype.labels import info
from paretoml.filetype.signatures import SIGNATURE_LABELS, signature_label

# headers laid out as each format's specification gives them (field values of real files)
POSITIVE = {
    "rar": [b"Rar!\x1a\x07\x00" + bytes.fromhex("cf907300000d00000000000000"),
            b"Rar!\x1a\x07\x01\x00" + bytes.fromhex("33 92 b5 e5 0a 01 05 06 00 05 01 01 80 80 00")],
    "xar": [b"xar!" + struct.pack(">HHQQI", 28, 1, 1200, 4800, 1) + bytes(8)],
    "rpm": [b"\xed\xab\xee\xdb\x03\x00\x00\x00\x00\x01" + b"bash-5.2-1".ljust(66, b"\0")],
    # inodes, mkfs time, block size, fragments, compression (gzip), block log, flags, ids, major 4, minor 0
    "squashfs": [b"hsqs" + struct.pack("<IIIIHHHHHH", 12, 0, 131072, 2, 1, 17, 0, 1, 4, 0) + bytes(8)],
    "chm": [b"ITSF" + struct.pack("<III", 3, 0x60, 1) + bytes(40)],
    "dex": [b"dex\n035\x00" + bytes(24), b"dex\n039\x00" + bytes(24)],
    "macho": [b"\xcf\xfa\xed\xfe" + struct.pack("<iIIII", 0x0100000C, 0, 8, 20, 2000) + bytes(8),   # arm64 bundle
              b"\xce\xfa\xed\xfe" + struct.pack("<iIIII", 7, 3, 2, 12, 1000) + bytes(8),            # i386 executable
              b"\xfe\xed\xfa\xce" + struct.pack(">iIIII", 18, 0, 6, 10, 900) + bytes(8)],           # ppc dylib
    "lnk": [b"\x4c\x00\x00\x00" + bytes.fromhex("0114020000000000c000000000000046") + bytes(56)],
}
NEGATIVE = [
    b"Rar! is how the lion said it\n",                  # the letters, not the signature
    b"xar! xar! xar!\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    b"xar!" + struct.pack(">HH", 28, 2) + bytes(30),      # unknown version
    b"hsqs" + bytes(24) + struct.pack("<H", 3) + bytes(4),  # squashfs 3 is not the format we name
    b"ITSF" + struct.pack("<II", 9, 0x60) + bytes(40),
    b"dex\nabc\x00" + bytes(24),
    b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(32),      # a Java class (or a fat Mach-O): the model's call
    b"\xcf\xfa\xed\xfe" + struct.pack("<iIIII", 99, 0, 8, 20, 2000) + bytes(8),  # no such CPU type
    b"\x4c\x00\x00\x00" + bytes(60),
    b"\x7fELF\x02\x01\x01" + bytes(40),
    b"#!/bin/sh\necho hi\n",
]


@pytest.mark.parametrize("label,data", [(k, v) for k, vs in POSITIVE.items() for v in vs])
def test_signature_positive(label, data):
    assert signature_label(data) == label
    r = Detector().identify_bytes(data + bytes(100))
    assert (r.label, r.decided_by, r.score) == (label, "rule", 1.0)
    assert r.mime_type == info(label).mime_type and not r.is_text


@pytest.mark.parametrize("data", NEGATIVE)
def test_signature_negative(data):
    assert signature_label(data) is None


def test_every_label_has_knowledge_and_a_case():
    assert set(POSITIVE) == set(SIGNATURE_LABELS)
    for lab in SIGNATURE_LABELS:
        assert info(lab).label == lab


def test_short_inputs_never_raise():
    for sig in (b"Rar!", b"xar!", b"hsqs", b"ITSF", b"dex\n", b"\xcf\xfa\xed\xfe", b"\x4c\x00\x00\x00"):
        for n in range(len(sig), 40):
            signature_label(sig + b"\x01" * (n - len(sig)))


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="squashfs-tools not installed")
def test_real_squashfs_image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello\n" * 100)
    img = tmp_path / "img.sqsh"
    subprocess.run(["mksquashfs", str(src), str(img), "-noappend", "-quiet"], check=True, capture_output=True)
    assert Detector().identify_path(img).label == "squashfs"


# --- the two shipped models (session 8): "default" (512-byte windows) and "wide" (1,024) -------------

def test_shipped_models_differ_in_window_and_both_work(tmp_path):
    from paretoml.filetype import MODELS, DetectorConfig

    assert set(MODELS) == {"default", "wide"}
    d_default, d_wide = Detector(), Detector(config=DetectorConfig(model="wide"))
    assert d_default.feature_config.window == 512 and d_wide.feature_config.window == 1024
    assert Detector("best-guess", config=DetectorConfig(model="wide")).feature_config.window == 1024
    src = b"#!/usr/bin/env python3\nimport sys\n\ndef main():\n    print(sys.argv)\n\nmain()\n" * 3
    p = tmp_path / "s.py"
    p.write_bytes(src)
    assert d_default.identify_path(p).label == d_wide.identify_path(p).label == "python"


def test_unknown_model_name_is_a_clear_error():
    from paretoml.filetype import DetectorConfig

    with pytest.raises(ValueError, match="model must be one of"):
        DetectorConfig(model="tiny")


def test_cli_model_flag(tmp_path, capsys):
    import json

    from paretoml.cli import main

    p = tmp_path / "a.json"
    doc = {"name": "demo-package", "version": "1.2.3", "description": "A small demo package",
           "scripts": {"test": "jest", "build": "tsc -p ."}, "dependencies": {"lodash": "^4.17.21"},
           "devDependencies": {"jest": "^29.0.0", "typescript": "^5.4.0"}, "license": "MIT"}
    p.write_text(json.dumps(doc, indent=2) + "\n")
    for m in ("default", "wide"):
        assert main(["filetype", "identify", "--model", m, "--mode", "best-guess", "--jsonl", str(p)]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] == "json"
