"""ZIP container rule (`paretoml.filetype.containers`): member names decide the subtype."""

import io
import os
import zipfile

import numpy as np
import pytest

from paretoml.filetype import Detector
from paretoml.filetype.containers import zip_label


def _zip(members, *, first_stored=False, zip64=False, comment=b""):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i, (name, data) in enumerate(members):
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_STORED if (first_stored and i == 0) else zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=zip64) as f:
                f.write(data)
        z.comment = comment
    return buf.getvalue()


def _label(data: bytes):
    return zip_label(lambda off, n: data[off:off + n], len(data))


ODF = "application/vnd.oasis.opendocument."
CASES = [
    ("epub", [("mimetype", b"application/epub+zip"), ("META-INF/container.xml", b"<c/>"), ("a.xhtml", b"<x/>")], True),
    ("odt", [("mimetype", (ODF + "text").encode()), ("content.xml", b"<x/>"), ("META-INF/manifest.xml", b"<m/>")], True),
    ("ods", [("mimetype", (ODF + "spreadsheet").encode()), ("content.xml", b"<x/>")], True),
    ("odp", [("mimetype", (ODF + "presentation").encode()), ("content.xml", b"<x/>")], True),
    ("zip", [("mimetype", (ODF + "graphics").encode()), ("content.xml", b"<x/>")], True),  # ODF kind we lack
    ("docx", [("[Content_Types].xml", b"<Types/>"), ("_rels/.rels", b"<R/>"), ("word/document.xml", b"<w/>")], False),
    ("xlsx", [("[Content_Types].xml", b"<Types/>"), ("xl/workbook.xml", b"<w/>"), ("docProps/app.xml", b"<a/>")], False),
    ("pptx", [("[Content_Types].xml", b"<Types/>"), ("ppt/presentation.xml", b"<p/>")], False),
    ("zip", [("[Content_Types].xml", b"<Types/>"), ("visio/document.xml", b"<v/>")], False),  # OPC kind we lack
    ("jar", [("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"), ("a/B.class", b"\xca\xfe\xba\xbe")], False),
    ("jar", [("org/x/Y.class", b"\xca\xfe\xba\xbe" + bytes(40))], False),
    ("zip", [("META-INF/MANIFEST.MF", b"M"), ("classes.dex", b"dex\n035\0"), ("AndroidManifest.xml", b"\3\0")], False),
    ("npz", [("a.npy", b"\x93NUMPY" + bytes(20)), ("b.npy", b"\x93NUMPY" + bytes(20))], False),
    ("zip", [("a.npy", b"\x93NUMPY"), ("readme.txt", b"hello")], False),
    ("zip", [("src/main.c", b"int main(){}"), ("README", b"hi")], False),
]


@pytest.mark.parametrize("want,members,first_stored", CASES)
def test_zip_label_by_member_names(want, members, first_stored):
    assert _label(_zip(members, first_stored=first_stored)) == want


def test_stored_mimetype_required_for_odf_and_epub():
    # a deflated "mimetype" member is not the OCF/ODF signature: decided by the other names
    data = _zip([("mimetype", b"application/epub+zip"), ("a.xhtml", b"<x/>")], first_stored=False)
    assert _label(data) == "zip"


def test_real_writers_numpy_and_torch(tmp_path):
    torch = pytest.importorskip("torch")
    npz = tmp_path / "a.npz"
    np.savez(npz, x=np.arange(10), y=np.ones(3))
    pt = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(4)}, pt)
    d = Detector()
    for path, want in ((npz, "npz"), (pt, "pytorch")):
        r = d.identify_path(path)
        assert (r.label, r.decided_by, r.score) == (want, "rule", 1.0)
        assert d.identify_bytes(path.read_bytes()).label == want


def test_zip64_and_comment_and_large_directory():
    members = [(f"dir/f{i}.npy", b"\x93NUMPY") for i in range(3)]
    assert _label(_zip(members, zip64=True)) == "npz"
    assert _label(_zip(members, comment=b"c" * 60000)) == "npz"
    many = [("META-INF/MANIFEST.MF", b"M")] + [(f"p/C{i}.class", b"\xca\xfe") for i in range(3000)]
    assert _label(_zip(many)) == "jar"  # the manifest is the first name, far from the tail


def test_path_reads_only_what_it_needs(tmp_path):
    # a 5 MB archive: the rule reads the end record and the directory, not the members
    big = _zip([("META-INF/MANIFEST.MF", b"M"), ("blob.bin", os.urandom(5 << 20))])
    p = tmp_path / "big.jar"
    p.write_bytes(big)
    reads = []

    def read_at(off, n):
        reads.append(n)
        return big[off:off + n]

    assert zip_label(read_at, len(big)) == "jar"
    assert sum(reads) < 70_000
    assert Detector().identify_path(p).label == "jar"


@pytest.mark.parametrize("cut", [1, 10, 22, 60, 200])
def test_damaged_archives_go_to_the_model(cut):
    data = _zip([("a.npy", b"\x93NUMPY" * 50), ("b.npy", b"\x93NUMPY" * 50)])
    broken = data[:-cut]  # end record cut or shifted: never raises
    assert _label(broken) in (None, "npz")
    r = Detector().identify_bytes(broken)
    assert r.status == "ok" and (r.decided_by == "model" or r.label == "npz")


def test_garbage_after_signature_never_raises():
    rng = np.random.default_rng(0)
    d = Detector()
    for n in (4, 22, 30, 46, 100, 5000):
        for _ in range(20):
            data = b"PK\x03\x04" + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            data += b"PK\x05\x06" + rng.integers(0, 256, 18, dtype=np.uint8).tobytes()
            _label(data)
            assert d.identify_bytes(data).status == "ok"


def test_empty_archive():
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    assert _label(buf.getvalue()) == "zip"
    assert Detector().identify_bytes(buf.getvalue()).label == "zip"
