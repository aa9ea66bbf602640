"""Signature rules for binary formats the model has no label for.

The byte model knows 132 labels. Some formats outside them carry a long, fixed signature at
offset 0 that their specifications define, so a rule names them exactly instead of letting the
model abstain (``unknown``) or guess. Each entry checks more than the magic bytes where the
format has a version or size field right after it, so a text file that happens to start with the
same letters is not taken. Label names are Magika's.

| label | signature (offset 0) |
|---|---|
| rar | ``Rar!\\x1a\\x07\\x00`` (RAR 1.5–4) or ``Rar!\\x1a\\x07\\x01\\x00`` (RAR 5) |
| xar | ``xar!``, header size ≥ 28 (big-endian u16), version 1 |
| rpm | ``\\xed\\xab\\xee\\xdb``, lead major version 3 or 4 |
| squashfs | ``hsqs``, major version 4 at byte 28 (little-endian u16) |
| chm | ``ITSF``, version 2 or 3, header length 0x58 or 0x60 |
| dex | ``dex\\n``, three ASCII digits, NUL |
| macho | 32/64-bit Mach-O magic in either byte order and a CPU type of a known family |
| lnk | header size 0x4C and the Shell Link CLSID 00021401-0000-0000-C000-000000000046 |

Universal ("fat") Mach-O files share ``\\xca\\xfe\\xba\\xbe`` with Java class files and are
left to the model.

    >>> signature_label(b"Rar!\\x1a\\x07\\x01\\x00" + bytes(20))
    'rar'
    >>> signature_label(b"Rar! is a word") is None
    True
"""

from __future__ import annotations

import struct

__all__ = ["signature_label", "SIGNATURE_LABELS"]

SIGNATURE_LABELS = ("rar", "xar", "rpm", "squashfs", "chm", "dex", "macho", "lnk")
_LNK_CLSID = bytes.fromhex("0114020000000000c000000000000046")
# Mach-O CPU types (without the 64-bit ABI flag): VAX … ARM64_32, per <mach/machine.h>
_MACHO_CPUS = {1, 6, 7, 10, 11, 12, 13, 14, 15, 16, 18}
_MACHO_MAGIC = {b"\xfe\xed\xfa\xce": ">", b"\xfe\xed\xfa\xcf": ">", b"\xce\xfa\xed\xfe": "<", b"\xcf\xfa\xed\xfe": "<"}


def _macho(h: bytes) -> bool:
    order = _MACHO_MAGIC.get(h[:4])
    if order is None or len(h) < 16:
        return False
    cpu, _sub, filetype = struct.unpack_from(order + "iII", h, 4)
    return (cpu & 0xFFFFFF) in _MACHO_CPUS and 1 <= filetype <= 12


def signature_label(head: bytes) -> str | None:
    """The label of a file whose first bytes (at least 32 where available) carry a signature
    from the table above, else None."""
    if len(head) < 8:
        return None
    b4 = head[:4]
    if b4 == b"Rar!":
        return "rar" if head[4:7] == b"\x1a\x07\x00" or head[4:8] == b"\x1a\x07\x01\x00" else None
    if b4 == b"xar!":
        size, version = struct.unpack_from(">HH", head, 4)
        return "xar" if size >= 28 and version == 1 else None
    if b4 == b"\xed\xab\xee\xdb":
        return "rpm" if head[4] in (3, 4) else None
    if b4 == b"hsqs":
        return "squashfs" if len(head) >= 30 and struct.unpack_from("<H", head, 28)[0] == 4 else None
    if b4 == b"ITSF":
        if len(head) < 12:
            return None
        version, hlen = struct.unpack_from("<II", head, 4)
        return "chm" if version in (2, 3) and hlen in (0x58, 0x60) else None
    if b4 == b"dex\n":
        return "dex" if head[4:7].isdigit() and head[7] == 0 else None
    if b4 in _MACHO_MAGIC:
        return "macho" if _macho(head) else None
    if b4 == b"\x4c\x00\x00\x00":
        return "lnk" if head[4:20] == _LNK_CLSID else None
    return None
