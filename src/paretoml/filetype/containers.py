"""Container rules: name the kind of a ZIP archive from its member names, by the formats' specs.

A byte model that sees 512 bytes from each end of a ZIP file sees a local header or two and the
end of the central directory. That is often not enough to tell a Word document from a Java
archive: both are ZIPs of deflated XML or class files, and which one it is is written in member
names the model may never see. The formats define those names, so a rule reads them:

| label | evidence (spec) |
|---|---|
| epub, odt, ods, odp | first member ``mimetype``, stored, holding the media type (EPUB OCF, ODF 1.2 §3.3) |
| docx, xlsx, pptx | ``[Content_Types].xml`` plus ``word/``, ``xl/`` or ``ppt/`` parts (ECMA-376 OPC) |
| jar | ``META-INF/MANIFEST.MF`` or ``.class`` members, and no Android ``classes.dex`` (JAR spec) |
| pytorch | ``<name>/data.pkl`` beside ``<name>/version`` (torch.save's zip layout) |
| npz | every member ends in ``.npy`` (numpy.savez) |
| zip | any other readable archive (the container is what is known) |

The central directory is located through the end-of-central-directory record and read with at
most two small extra reads (only for files that start with a ZIP signature). Anything that does
not parse returns None and the model decides.

    >>> import io, zipfile
    >>> buf = io.BytesIO()
    >>> with zipfile.ZipFile(buf, "w") as z:
    ...     z.writestr("a.npy", b"x"); z.writestr("b.npy", b"y")
    >>> data = buf.getvalue()
    >>> zip_label(lambda off, n: data[off:off + n], len(data))
    'npz'
"""

from __future__ import annotations

import struct
from typing import Callable

__all__ = ["zip_label", "ZIP_LABELS"]

ZIP_LABELS = ("epub", "odt", "ods", "odp", "docx", "xlsx", "pptx", "jar", "pytorch", "npz", "zip")
_LOCAL, _CENTRAL, _EOCD = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
_ZIP64_EOCD, _ZIP64_LOCATOR = b"PK\x06\x06", b"PK\x06\x07"
_MIMETYPES = {
    b"application/epub+zip": "epub",
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
    b"application/vnd.oasis.opendocument.presentation": "odp",
}
_EOCD_SEARCH = 22 + 0xFFFF  # the record (22 bytes) plus the longest archive comment
_CD_MAX = 1 << 18  # read at most 256 KiB of central directory (thousands of names)

ReadAt = Callable[[int, int], bytes]


def _central_names(read_at: ReadAt, size: int) -> list[bytes] | None:
    """Member names from the central directory, or None when no end record is found."""
    n = min(size, _EOCD_SEARCH)
    end = read_at(size - n, n)
    i = end.rfind(_EOCD)
    while i != -1 and i + 22 > len(end):
        i = end.rfind(_EOCD, 0, i)
    if i == -1:
        return None
    cd_size = struct.unpack_from("<I", end, i + 12)[0]
    cd_end = size - n + i  # the directory ends where the end record starts (robust to prepended data)
    if end[max(i - 20, 0):i].startswith(_ZIP64_LOCATOR):  # ZIP64: its end record sits in between
        j = end.rfind(_ZIP64_EOCD, 0, i - 20)
        if j == -1 or j + 56 > i - 20:
            return None
        cd_end = size - n + j
        cd_size = struct.unpack_from("<Q", end, j + 40)[0]
    if cd_size > cd_end:  # damaged: let the model decide
        return None
    take = min(cd_size, _CD_MAX)
    cd = read_at(cd_end - cd_size, take)
    names, pos = [], 0
    while pos + 46 <= len(cd) and cd[pos:pos + 4] == _CENTRAL:
        nlen, xlen, clen = struct.unpack_from("<HHH", cd, pos + 28)
        name = cd[pos + 46:pos + 46 + nlen]
        if len(name) < nlen:
            break
        names.append(name)
        pos += 46 + nlen + xlen + clen
    return names


def _first_member(head: bytes) -> tuple[bytes, int, bytes] | None:
    """(name, compression method, first stored bytes) of the local header at offset 0."""
    if len(head) < 30 or not head.startswith(_LOCAL):
        return None
    method, = struct.unpack_from("<H", head, 8)
    csize, = struct.unpack_from("<I", head, 18)
    nlen, xlen = struct.unpack_from("<HH", head, 26)
    name = head[30:30 + nlen]
    start = 30 + nlen + xlen
    return name, method, head[start:start + min(csize, 128)]


def zip_label(read_at: ReadAt, size: int) -> str | None:
    """The label of a ZIP-based file, or None when it is not a readable ZIP archive.

    Args:
        read_at: ``read_at(offset, n)`` returns up to n bytes of the file from offset.
        size: the file's size in bytes.
    """
    if size < 22:
        return None
    head = read_at(0, min(size, 512))
    if head.startswith(_EOCD) and size == 22:
        return "zip"  # an empty archive is only its end record
    first = _first_member(head)
    if first is None:
        return None
    name, method, data = first
    if name == b"mimetype" and method == 0:
        return _MIMETYPES.get(data.strip(), "zip")
    names = _central_names(read_at, size)
    if names is None:
        return None
    names.append(name)
    seen = set(names)
    if b"[Content_Types].xml" in seen:
        for prefix, label in ((b"word/", "docx"), (b"xl/", "xlsx"), (b"ppt/", "pptx")):
            if any(n.startswith(prefix) for n in names):
                return label
        return "zip"
    if b"classes.dex" in seen or b"AndroidManifest.xml" in seen:
        return "zip"  # an Android package: no label of its own here
    if b"META-INF/MANIFEST.MF" in seen or any(n.endswith(b".class") for n in names):
        return "jar"
    if any(n.endswith(b"/data.pkl") or n == b"data.pkl" for n in names) and \
            any(n.endswith(b"/version") or n == b"version" for n in names):
        return "pytorch"
    if all(n.endswith(b".npy") for n in names):
        return "npz"
    return "zip"
