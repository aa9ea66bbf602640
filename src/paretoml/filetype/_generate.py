"""Files written by real encoders from real inputs, for the corpus (see corpus.py).

Each generator takes real inputs found on this machine (images, sounds, texts, folders),
runs a real writer (ffmpeg, Pillow, p7zip, genisoimage, stdlib modules, numpy, torch, office
libraries, LibreOffice) and writes into ``gen/<generator>/<input-package>/``. A missing tool skips its
generator (logged), so the corpus builds with whatever is installed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import logging
import lzma
import os
import plistlib
import random
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

log = logging.getLogger(__name__)


def _files(roots, exts, limit, rng, min_size=64, max_size=8 << 20):
    out = []
    for root in roots:
        for dp, dn, fn in os.walk(root):
            for f in fn:
                if f.rsplit(".", 1)[-1].lower() in exts:
                    p = Path(dp) / f
                    try:
                        if not p.is_symlink() and min_size <= p.stat().st_size <= max_size:
                            out.append(p)
                    except OSError:
                        pass
    rng.shuffle(out)
    return out[:limit]


def _pkg(p: Path) -> str:
    """A stable group name for an input (its folder two levels up), used as the split unit. An
    input that a generator wrote (``gen/<generator>/<package>/file``, e.g. a generated ODT file
    converted again, or a speech WAV encoded again) keeps its own input's package."""
    if p.parent.parent.parent.name == "gen":
        return p.parent.name
    parts = p.parts
    return "_".join(parts[2:5]).replace(".", "_")[:60] if len(parts) > 4 else "misc"


def _out(base: Path, gen: str, src: Path, name: str) -> Path:
    d = base / gen / _pkg(src)
    d.mkdir(parents=True, exist_ok=True)
    return d / name


def _run(cmd, **kw) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=120, **kw).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run_atomic(cmd: list[str], tmp: Path, dst: Path, **kw) -> bool:
    """Run `cmd`, which writes the file `tmp` (in a private temporary folder), and on success move
    the result to `dst` atomically: an interrupted or failed encoder never leaves a cut file in
    the corpus, and a rerun never appends to an earlier archive. Returns whether `dst` was written."""
    from paretoml.frontier import atomic_write

    tmp.unlink(missing_ok=True)
    ok = _run(cmd, **kw) and tmp.is_file() and tmp.stat().st_size > 0
    if ok:
        atomic_write(dst, tmp.read_bytes())
    tmp.unlink(missing_ok=True)
    return ok


def _images(base, imgs, rng):
    from PIL import Image

    fmts = [("bmp", "BMP", {}), ("gif", "GIF", {}), ("tiff", "TIFF", {}), ("webp", "WEBP", {}),
            ("ico", "ICO", {}), ("tga", "TGA", {}), ("jp2", "JPEG2000", {}), ("ppm", "PPM", {}),
            ("pcx", "PCX", {}), ("jpg", "JPEG", {}), ("png", "PNG", {}), ("icns", "ICNS", {}),
            ("pdf", "PDF", {}), ("eps", "EPS", {})]
    for i, src in enumerate(imgs):
        try:
            im = Image.open(src)
            im.load()
        except Exception:  # noqa: BLE001 — unreadable input image: skip it
            continue
        for ext, fmt, kw in fmts:
            try:
                x = im
                if fmt in ("JPEG", "PPM", "PCX", "EPS", "PDF", "TGA", "BMP") and x.mode not in ("RGB", "L"):
                    x = x.convert("RGB")
                if fmt == "ICNS":
                    x = x.convert("RGBA").resize((128, 128))
                if fmt == "ICO":
                    x = x.resize((min(x.width, 64), min(x.height, 64)))
                if rng.random() < 0.5 and fmt not in ("ICNS", "ICO"):
                    s = rng.uniform(0.3, 1.0)
                    x = x.resize((max(8, int(x.width * s)), max(8, int(x.height * s))))
                x.save(_out(base, f"img_{ext}", src, f"{i}.{ext}"), fmt, **kw)
            except Exception:  # noqa: BLE001 — some modes cannot be written in some formats
                continue


def _media(base, audios, imgs, rng):
    if shutil.which("ffmpeg") is None:
        log.warning("ffmpeg not found: no audio/video generated")
        return
    aud = [("mp3", ["-c:a", "libmp3lame"]), ("flac", []), ("ogg", ["-c:a", "libvorbis"]), ("wav", []),
           ("aiff", []), ("m4a", ["-c:a", "aac"]), ("opus", ["-c:a", "libopus"])]
    for i, src in enumerate(audios):
        for ext, args in aud:
            dst = _out(base, f"aud_{ext}", src, f"{i}.{ext}")
            ar = rng.choice(["22050", "44100", "48000"])
            _run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), "-t", "20", "-ar", ar, *args,
                  *(["-map_metadata", "-1"] if rng.random() < 0.5 else []), str(dst)])
    vid = [("mp4", []), ("mkv", []), ("webm", ["-c:v", "libvpx", "-b:v", "200k"]), ("flv", []),
           ("3gp", ["-s", "176x144", "-ar", "8000", "-ac", "1", "-c:a", "aac"]), ("mov", []), ("avi", [])]
    for i, src in enumerate(imgs):
        for ext, args in vid:
            dst = _out(base, f"vid_{ext}", src, f"{i}.{ext}")
            a = audios[i % len(audios)] if audios else None
            cmd = ["ffmpeg", "-y", "-loglevel", "error", "-loop", "1", "-i", str(src)]
            if a is not None and rng.random() < 0.7:
                cmd += ["-i", str(a), "-shortest"]
            cmd += ["-t", str(rng.choice([1, 2])), "-r", "5", "-vf", "scale=trunc(iw/8)*2:trunc(ih/8)*2",
                    "-pix_fmt", "yuv420p", *args, str(dst)]
            _run(cmd)


def _compress(base, texts, bins, rng):
    import tarfile

    for i, src in enumerate(texts + bins):
        data = src.read_bytes()[: 1 << 20]
        _out(base, "gzip", src, f"{i}.gz").write_bytes(gzip.compress(data, compresslevel=rng.choice([1, 6, 9])))
        _out(base, "bzip", src, f"{i}.bz2").write_bytes(bz2.compress(data))
        _out(base, "xz", src, f"{i}.xz").write_bytes(lzma.compress(data))
        _out(base, "zlib", src, f"{i}.zlib").write_bytes(zlib.compress(data, rng.choice([1, 6, 9])))
        if shutil.which("zstd"):
            _run(["zstd", "-q", "-f", str(src), "-o", str(_out(base, "zstd", src, f"{i}.zst"))])
    dirs = sorted({p.parent for p in texts + bins})
    rng.shuffle(dirs)
    for i, d in enumerate(dirs[:250]):
        members = [p for p in sorted(d.iterdir())[:20] if p.is_file() and not p.is_symlink()]
        if not members:
            continue
        src = members[0]
        fmt = rng.choice([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
        with tarfile.open(_out(base, "tar", src, f"{i}.tar"), "w", format=fmt) as tf:
            for m in members:
                tf.add(m, arcname=m.name)
        comp = rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
        with zipfile.ZipFile(_out(base, "zip", src, f"{i}.zip"), "w", comp) as zf:
            for m in members:
                zf.write(m, arcname=m.name)
        if shutil.which("7z"):
            _run(["7z", "a", "-bd", "-y", str(_out(base, "7z", src, f"{i}.7z")), *map(str, members[:8])])
        if i < 120 and shutil.which("genisoimage"):
            _run(["genisoimage", "-quiet", "-o", str(_out(base, "iso", src, f"{i}.iso")), "-graft-points",
                  *[f"{m.name}={m}" for m in members[:5]]])


def _stdlib(base, texts, jsons, csvs, rng):
    import csv
    import pickle
    import sqlite3
    from email.message import EmailMessage

    for i, src in enumerate(jsons):
        try:
            obj = json.loads(src.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        try:
            _out(base, "bplist", src, f"{i}.plist").write_bytes(plistlib.dumps(_plistable(obj), fmt=plistlib.FMT_BINARY))
            _out(base, "xplist", src, f"{i}.plist").write_bytes(plistlib.dumps(_plistable(obj)))
        except (TypeError, ValueError, OverflowError):
            pass
        _out(base, "pickle", src, f"{i}.pkl").write_bytes(pickle.dumps(obj, protocol=rng.choice([2, 3, 4, 5])))
        if isinstance(obj, list) and obj:
            _out(base, "jsonl", src, f"{i}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in obj[:500]))
        elif isinstance(obj, dict) and obj:
            _out(base, "jsonl", src, f"{i}.jsonl").write_text(
                "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in list(obj.items())[:500]))
    for i, src in enumerate(csvs):
        try:
            rows = list(csv.reader(io.StringIO(src.read_text())))[:2000]
        except (UnicodeDecodeError, csv.Error):
            continue
        if len(rows) < 2:
            continue
        buf = io.StringIO()
        csv.writer(buf, delimiter="\t").writerows(rows)
        _out(base, "tsv", src, f"{i}.tsv").write_text(buf.getvalue())
        db = _out(base, "sqlite", src, f"{i}.sqlite")
        db.unlink(missing_ok=True)
        con = sqlite3.connect(db)
        n = max(len(r) for r in rows)
        con.execute(f"create table t ({', '.join(f'c{j}' for j in range(n))})")
        con.executemany(f"insert into t values ({', '.join('?' * n)})", [r + [None] * (n - len(r)) for r in rows[1:]])
        con.commit()
        con.close()
    for i, src in enumerate(texts):
        try:
            body = src.read_text()[:20000]
        except UnicodeDecodeError:
            continue
        m = EmailMessage()
        m["From"] = rng.choice(["alice@example.org", "Bob <bob@example.com>", "dev@lists.debian.org"])
        m["To"] = "team@example.net"
        m["Subject"] = src.name
        m.set_content(body)
        if rng.random() < 0.3:
            m.add_attachment(src.read_bytes()[:4000], maintype="application", subtype="octet-stream", filename=src.name)
        _out(base, "eml", src, f"{i}.eml").write_bytes(bytes(m))


def _plistable(o):
    if isinstance(o, dict):
        return {str(k): _plistable(v) for k, v in o.items() if v is not None}
    if isinstance(o, list):
        return [_plistable(v) for v in o if v is not None]
    if isinstance(o, int) and abs(o) >= 2**63:
        return str(o)
    return o


def _arrays(base, imgs, rng):
    import numpy as np
    from PIL import Image

    for i, src in enumerate(imgs):
        try:
            a = np.asarray(Image.open(src).convert("RGB"))
        except Exception:  # noqa: BLE001 — unreadable input image
            continue
        dt = rng.choice([np.uint8, np.float32, np.float64, np.int16])
        np.save(_out(base, "npy", src, f"{i}.npy"), a.astype(dt))
        saver = np.savez_compressed if rng.random() < 0.5 else np.savez
        saver(_out(base, "npz", src, f"{i}.npz"), img=a, mean=a.mean(axis=(0, 1)))
    try:
        import torch
    except ImportError:
        return
    for i in range(200):
        h = rng.choice([4, 8, 16, 32, 64])
        mods = [torch.nn.Linear(rng.choice([3, 8, 16]), h), torch.nn.ReLU(), torch.nn.Linear(h, rng.choice([2, 10]))]
        if rng.random() < 0.5:
            mods.insert(0, torch.nn.LayerNorm(mods[0].in_features))
        obj = torch.nn.Sequential(*mods).state_dict()
        if rng.random() < 0.3:
            obj = {"model": obj, "epoch": rng.randrange(100), "lr": 1e-3}
        d = base / "pytorch" / f"g{i % 20}"
        d.mkdir(parents=True, exist_ok=True)
        torch.save(obj, d / f"{i}.pt")


def _office(base, texts, csvs, rng):
    for name in ("docx", "pptx", "openpyxl", "odf", "xlwt"):
        try:
            __import__(name)
        except ImportError:
            log.warning("%s not installed: no %s files generated", name, name)
    for i, src in enumerate(texts):
        try:
            lines = [ln for ln in src.read_text().splitlines() if ln.strip()][:200]
        except UnicodeDecodeError:
            continue
        if not lines:
            continue
        for fn in (_docx, _pptx, _xlsx, _odt, _ods, _odp, _xls, _epub):
            try:
                fn(base, src, i, lines, rng)
            except ImportError:
                pass
            except Exception as e:  # noqa: BLE001 — a writer choking on odd text: skip that file
                log.debug("%s failed on %s: %s", fn.__name__, src, e)


def _clean(s: str) -> str:
    return "".join(c for c in s if c >= " " or c == "\t")[:500]


def _docx(base, src, i, lines, rng):
    import docx

    d = docx.Document()
    d.add_heading(_clean(src.name), 0)
    for ln in lines:
        d.add_paragraph(_clean(ln))
    d.save(_out(base, "docx", src, f"{i}.docx"))


def _pptx(base, src, i, lines, rng):
    import pptx

    p = pptx.Presentation()
    for k in range(0, min(len(lines), 40), 5):
        s = p.slides.add_slide(p.slide_layouts[1])
        s.shapes.title.text = _clean(lines[k])
        s.placeholders[1].text = "\n".join(_clean(x) for x in lines[k + 1:k + 5])
    p.save(_out(base, "pptx", src, f"{i}.pptx"))


def _xlsx(base, src, i, lines, rng):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    for ln in lines:
        ws.append([_clean(x) for x in ln.split()[:10]])
    wb.save(_out(base, "xlsx", src, f"{i}.xlsx"))


def _xls(base, src, i, lines, rng):
    import xlwt

    wb = xlwt.Workbook()
    ws = wb.add_sheet("Sheet1")
    for r, ln in enumerate(lines):
        for c, x in enumerate(ln.split()[:10]):
            ws.write(r, c, _clean(x)[:200])
    wb.save(str(_out(base, "xls", src, f"{i}.xls")))


def _odt(base, src, i, lines, rng):
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    d = OpenDocumentText()
    for ln in lines:
        d.text.addElement(P(text=_clean(ln)))
    d.save(str(_out(base, "odt", src, f"{i}.odt")))


def _ods(base, src, i, lines, rng):
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    d = OpenDocumentSpreadsheet()
    t = Table(name="Sheet1")
    for ln in lines[:100]:
        tr = TableRow()
        for x in ln.split()[:8]:
            tc = TableCell()
            tc.addElement(P(text=_clean(x)))
            tr.addElement(tc)
        t.addElement(tr)
    d.spreadsheet.addElement(t)
    d.save(str(_out(base, "ods", src, f"{i}.ods")))


def _odp(base, src, i, lines, rng):
    from odf.draw import Frame, Page, TextBox
    from odf.opendocument import OpenDocumentPresentation
    from odf.style import MasterPage, PageLayout
    from odf.text import P

    d = OpenDocumentPresentation()
    pl = PageLayout(name="PL")
    d.automaticstyles.addElement(pl)
    mp = MasterPage(name="Default", pagelayoutname=pl)
    d.masterstyles.addElement(mp)
    for k in range(0, min(len(lines), 30), 5):
        page = Page(masterpagename=mp)
        fr = Frame(width="20cm", height="10cm", x="1cm", y="1cm")
        tb = TextBox()
        for ln in lines[k:k + 5]:
            tb.addElement(P(text=_clean(ln)))
        fr.addElement(tb)
        page.addElement(fr)
        d.presentation.addElement(page)
    d.save(str(_out(base, "odp", src, f"{i}.odp")))


def _epub(base, src, i, lines, rng):
    import html

    body = "\n".join(f"<p>{html.escape(_clean(x))}</p>" for x in lines)
    with zipfile.ZipFile(_out(base, "epub", src, f"{i}.epub"), "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" '
                   'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
                   'full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>',
                   compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("content.opf", f'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
                   f'<metadata><dc:title xmlns:dc="http://purl.org/dc/elements/1.1/">{html.escape(src.name)}'
                   '</dc:title></metadata><manifest><item id="c" href="c.xhtml" media-type="application/xhtml+xml"/>'
                   '</manifest><spine><itemref idref="c"/></spine></package>', compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("c.xhtml", f"<html><body>{body}</body></html>", compress_type=zipfile.ZIP_DEFLATED)


def _classes(base, rng):
    """Java bytecode: .class members of real jars (javac's output)."""
    jars = [p for p in Path("/usr/share/java").glob("*.jar")] + list(Path("/usr/lib/jvm").rglob("*.jar"))
    rng.shuffle(jars)
    n = 0
    for j in jars[:60]:
        try:
            with zipfile.ZipFile(j) as z:
                names = [x for x in z.namelist() if x.endswith(".class")]
                rng.shuffle(names)
                for k, nm in enumerate(names[:25]):
                    d = base / "javabytecode" / j.stem[:40]
                    d.mkdir(parents=True, exist_ok=True)
                    (d / f"{k}.class").write_bytes(z.read(nm))
                    n += 1
        except (zipfile.BadZipFile, OSError):
            continue
    src = Path("/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip")
    if src.exists():  # Java sources, grouped by module (the split unit)
        with zipfile.ZipFile(src) as z:
            names = [x for x in z.namelist() if x.endswith(".java")]
            rng.shuffle(names)
            for k, nm in enumerate(names[:1500]):
                d = base / "javasrc" / nm.split("/")[0]
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{k}.java").write_bytes(z.read(nm))


def _unknown(base, rng):
    """Random bytes (the model's 'unknown' for data without structure)."""
    d = base / "random"
    for i in range(600):
        sub = d / f"g{i % 30}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.bin").write_bytes(os.urandom(rng.choice([16, 100, 1000, 5000, 20000])))
    if shutil.which("tic"):  # compiled terminfo (out of scope → unknown), from the system's sources
        pass


def _extra_tools(base, imgs, texts, rng):
    """PSD (ImageMagick), Cabinet (gcab) and pcap (tcpdump on loopback while real HTTP runs)."""
    im = shutil.which("convert-im6.q16") or shutil.which("magick")
    if im:
        for i, src in enumerate(imgs[:120]):
            _run([im, str(src), "-resize", f"{rng.choice([25, 50, 100])}%", str(_out(base, "psd", src, f"{i}.psd"))])
    if shutil.which("gcab"):
        for i in range(0, min(len(texts), 240), 2):
            _run(["gcab", "-c", *(["-z"] if rng.random() < 0.5 else []), "-n",
                  str(_out(base, "cab", texts[i], f"{i}.cab")), str(texts[i]), str(texts[i + 1])])
    if shutil.which("tcpdump"):
        import http.server
        import threading
        import time
        import urllib.request

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        port = srv.server_address[1]
        for i in range(40):
            dst = base / "pcap" / f"g{i % 10}" / f"{i}.pcap"
            dst.parent.mkdir(parents=True, exist_ok=True)
            extra = ["--time-stamp-precision=nano"] if rng.random() < 0.3 else []
            proc = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", str(rng.choice([96, 262144])), *extra,
                                     "-w", str(dst), "port", str(port)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(1.5)  # tcpdump needs a moment before it listens
            for _ in range(rng.randrange(1, 6)):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                except OSError:
                    pass
            time.sleep(1.0)
            proc.terminate()
            proc.wait(timeout=10)
        srv.shutdown()


def _soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def _rtf(base: Path, docs: list[Path], rng, batch: int = 40) -> int:
    """RTF written by LibreOffice (headless) from real documents: HTML manuals of Debian packages
    and the office files written above from real texts (session 6). Output goes to
    ``rtf/<input's project>/`` so the split unit is the input's package. Returns files written."""
    return _soffice_convert(base, docs, "rtf", "rtf", batch)


def _soffice_convert(base: Path, docs: list[Path], fmt: str, folder: str, batch: int = 40) -> int:
    """Convert `docs` with LibreOffice (headless, a private profile) to `fmt` (an extension that
    LibreOffice exports: rtf, docx, odt, epub, xlsx, ods, pptx, odp) into
    ``<base>/<folder>/<input's project>/``. HTML inputs are loaded as Writer documents. Returns
    files written."""
    exe = _soffice()
    if exe is None:
        log.warning("LibreOffice (soffice) not installed: no %s files generated", fmt)
        return 0
    import tempfile

    from paretoml.frontier import atomic_write

    written = 0
    with tempfile.TemporaryDirectory(prefix=f"ft_{fmt}_") as tmp:
        tmp = Path(tmp)
        profile = (tmp / "profile").as_uri()  # a private profile: never touches the user's one
        for kind in ("html", "office"):
            group = [d for d in docs if (d.suffix.lower() in (".html", ".htm")) == (kind == "html")]
            for b in range(0, len(group), batch):
                src_dir, out_dir = tmp / f"in{kind}{b}", tmp / f"out{kind}{b}"
                src_dir.mkdir()
                out_dir.mkdir()
                names = {}
                for k, d in enumerate(group[b:b + batch]):  # unique names: inputs share stems (index.html)
                    link = src_dir / f"{k}{d.suffix.lower()}"
                    link.symlink_to(d)
                    names[f"{k}.{fmt}"] = d
                cmd = [exe, "--headless", "--norestore", f"-env:UserInstallation={profile}"]
                if kind == "html":
                    cmd.append("--infilter=HTML (StarWriter)")  # load as a text document, not Writer/Web
                cmd += ["--convert-to", fmt, "--outdir", str(out_dir), *sorted(map(str, src_dir.iterdir()))]
                try:
                    subprocess.run(cmd, capture_output=True, timeout=900)
                except (OSError, subprocess.TimeoutExpired) as e:
                    log.warning("soffice failed: %s", e)
                    continue
                for f in out_dir.glob(f"*.{fmt}"):
                    d = names.get(f.name)
                    if d is not None and f.stat().st_size > 0:
                        # atomic (temp file beside, then rename): the tmp folder may be on another
                        # file system, where a move is a copy an interruption could cut short
                        atomic_write(base / folder / _pkg(d) / f"{d.stem}_{b}_{f.stem}.{fmt}", f.read_bytes())
                        written += 1
    return written


def _rtf_inputs(out: Path, rng, limit: int = 240) -> list[Path]:
    """Real documents for `_rtf`: HTML manuals from the unpacked Debian packages (one or two
    per package, many packages) and the generated ODT/DOCX files (real texts)."""
    html = _files([out.parent / "debs"], {"html", "htm"}, 100_000, rng, min_size=2_000, max_size=200_000)
    per_pkg: dict[str, list[Path]] = {}
    for h in html:
        per_pkg.setdefault(h.relative_to(out.parent / "debs").parts[0], []).append(h)
    picked = [p for v in per_pkg.values() for p in v[:2]]
    rng.shuffle(picked)
    office = _files([out / "odt", out / "docx"], {"odt", "docx"}, limit // 3, rng)
    return picked[:limit - len(office)] + office


# --------------------------------------------------------------------------- session 7
# Session 6 left most binary containers and audio formats written by one writer each (zip by
# Python's zipfile, office files by python-docx & co., audio by ffmpeg from 30 inputs of two
# packages): the model had learned the writer, not the format. These add other real writers.

def _one_per_package(root: Path, exts: set[str], limit: int, rng, **kw) -> list[Path]:
    """At most one input file per unpacked package under `root` (many projects, not many files)."""
    per_pkg: dict[str, Path] = {}
    for f in _files([root], exts, 200_000, rng, **kw):
        per_pkg.setdefault(f.relative_to(root).parts[0], f)
    picked = list(per_pkg.values())
    rng.shuffle(picked)
    return picked[:limit]


def _speech(base: Path, texts: list[Path], rng) -> list[Path]:
    """WAV files that espeak-ng writes reading real texts aloud (their first ~500 characters):
    sound inputs from many packages, and WAV from another writer. Returns the files written."""
    if shutil.which("espeak-ng") is None:
        log.warning("espeak-ng not installed: no speech inputs generated")
        return []
    import tempfile

    out = []
    with tempfile.TemporaryDirectory(prefix="ft_speech_") as tmp:
        for i, src in enumerate(texts):
            try:
                text = " ".join(src.read_text(errors="replace")[:500].split())
            except OSError:
                continue
            dst, part = _out(base, "aud_speech", src, f"{i}.wav"), Path(tmp) / f"{i}.wav"
            voice = rng.choice(["en", "en-us", "en-gb", "de", "fr", "es", "it"])
            if len(text) > 40 and _run_atomic(["espeak-ng", "-v", voice, "-s", str(rng.choice([140, 175, 210])),
                                               "-w", str(part), "--stdin"], part, dst, input=text.encode()):
                out.append(dst)
    return out


def _audio_encoders(base: Path, audios: list[Path], rng) -> int:
    """MP3 (lame; ID3v1, ID3v2, both or no tag), FLAC (the reference encoder), Ogg Vorbis (oggenc),
    Ogg Opus (opusenc) and WAV/AIFF (sox: 8–32 bit, float, big-endian RIFX) from `audios`."""
    import tempfile

    if shutil.which("ffmpeg") is None:
        log.warning("ffmpeg not found: no audio decoded for the encoders")
        return 0
    n = 0
    with tempfile.TemporaryDirectory(prefix="ft_aud_") as tmp:
        for i, src in enumerate(audios):
            pcm = Path(tmp) / f"{i}.wav"  # every encoder reads WAV: decode the input once
            if not _run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), "-t", "15", str(pcm)]):
                continue
            title = ["--tt", src.stem[:30], "--ta", _pkg(src)[:30]]
            tag = rng.choice([[], ["--id3v1-only", *title], ["--id3v2-only", *title], ["--add-id3v2", *title]])
            rate = rng.choice([["-b", "64"], ["-b", "128"], ["-b", "192"], ["-V", "2"], ["-V", "6"]])
            sox_wav = rng.choice([["-b", "8"], ["-b", "16"], ["-b", "24"], ["-e", "floating-point", "-b", "32"]])
            jobs = {  # (generator folder, extension) -> command writing {out}
                ("aud7_lame", "mp3"): ["lame", "--quiet", *rate, *tag, str(pcm), "{out}"],
                ("aud7_flac", "flac"): ["flac", "-s", "-f", f"-{rng.randrange(9)}",
                                        *(["--no-padding"] if rng.random() < 0.3 else []),
                                        *([f"--tag=TITLE={src.stem[:30]}"] if rng.random() < 0.5 else []),
                                        "-o", "{out}", str(pcm)],
                ("aud7_oggenc", "ogg"): ["oggenc", "-Q", "-q", str(rng.randrange(7)), "-o", "{out}", str(pcm)],
                ("aud7_opus", "opus"): ["opusenc", "--quiet", "--bitrate", rng.choice(["24", "48", "96"]), str(pcm),
                                        "{out}"],
                ("aud7_sox", "wav"): ["sox", str(pcm), *sox_wav, *(["-B"] if rng.random() < 0.4 else []), "{out}"],
                ("aud7_sox", "aiff"): ["sox", str(pcm), "-b", rng.choice(["8", "16", "24"]), "{out}"],
            }
            for (gen, ext), cmd in jobs.items():
                part = Path(tmp) / f"out.{ext}"
                if shutil.which(cmd[0]) and _run_atomic([str(part) if c == "{out}" else c for c in cmd], part,
                                                        _out(base, gen, src, f"{i}.{ext}")):
                    n += 1
    return n


def _zip_writers(base: Path, dirs: list[Path], rng) -> int:
    """ZIP archives from Info-ZIP's ``zip`` (stored to -9, ZipCrypto, with and without extra
    fields and folder entries) and p7zip (Deflate, Deflate64, BZip2, LZMA, stored; ZipCrypto or
    AES) of real folders, one folder a package."""
    import tempfile

    n = 0
    with tempfile.TemporaryDirectory(prefix="ft_zip_") as tmp:
        part = Path(tmp) / "out.zip"
        for i, d in enumerate(dirs):
            try:
                members = [p.name for p in sorted(d.iterdir())[:20] if p.is_file() and not p.is_symlink()]
            except OSError:
                continue
            if not members:
                continue
            src = d / members[0]
            if shutil.which("zip"):
                opts = [rng.choice(["-0", "-1", "-6", "-9"]), *(["-X"] if rng.random() < 0.5 else []),
                        *(["-P", "paretoml"] if rng.random() < 0.2 else [])]
                dst = _out(base, "zip_infozip", src, f"{i}.zip")
                if rng.random() < 0.5:  # the folder itself (with its directory entry) or its files
                    n += _run_atomic(["zip", "-q", *opts, str(part), f"{d.name}/", *[f"{d.name}/{m}" for m in members]],
                                     part, dst, cwd=d.parent)
                else:
                    n += _run_atomic(["zip", "-q", *opts, str(part), *members], part, dst, cwd=d)
            if shutil.which("7z"):
                method = rng.choice(["Deflate", "Deflate64", "BZip2", "LZMA", "Copy"])
                crypt = rng.choice([[], [], [], ["-pparetoml"], ["-pparetoml", "-mem=AES256"]])
                n += _run_atomic(["7z", "a", "-bd", "-y", "-tzip", f"-mm={method}", *crypt, str(part), *members],
                                 part, _out(base, "zip_7z", src, f"{i}.zip"), cwd=d)
    return n


def _office_lo(out: Path, rng) -> int:
    """Office documents written by LibreOffice, whose files differ from python-docx/openpyxl/odfpy's:
    DOCX, ODT and EPUB from HTML manuals (one a package) and the generated ODT/DOCX files, XLSX and
    ODS from real CSV files, PPTX from the generated ODP files and ODP from the generated PPTX."""
    html = _one_per_package(out.parent / "debs", {"html", "htm"}, 150, rng, min_size=2_000, max_size=200_000)
    docs = html + _files([out / "odt", out / "docx"], {"odt", "docx"}, 60, rng)
    csvs = _files([out.parent / "debs", out.parent / "pypi", Path("/usr")], {"csv"}, 150, rng, min_size=200,
                  max_size=1 << 20)
    n = 0
    for fmt, inputs in (("docx", docs), ("odt", docs), ("epub", docs), ("xlsx", csvs), ("ods", csvs),
                        ("pptx", _files([out / "odp"], {"odp"}, 120, rng)),
                        ("odp", _files([out / "pptx"], {"pptx"}, 120, rng))):
        n += _soffice_convert(out, [d for d in inputs if d.suffix.lower() != f".{fmt}"], fmt, f"lo_{fmt}")
    return n


def _late_rtf(out: Path, rng) -> int:
    """Session 6: RTF from LibreOffice (`_rtf`)."""
    return _rtf(out, _rtf_inputs(out, rng), rng)


def _late_audio(out: Path, rng) -> int:
    """Session 7: the audio encoders over the real sounds and speech of texts of 160 packages."""
    debs = out.parent / "debs"
    texts = _one_per_package(debs, {"txt", "md", "rst"}, 160, rng, min_size=300, max_size=1 << 20)
    real = _files([Path("/usr/share"), debs], {"oga", "ogg", "wav", "flac", "mp3"}, 60, rng, min_size=2000)
    return _audio_encoders(out, real + _speech(out, texts, rng), rng)


def _late_zip(out: Path, rng) -> int:
    """Session 7: Info-ZIP and p7zip archives of one folder from each of up to 300 packages."""
    picked = _one_per_package(out.parent / "debs", {"txt", "html", "png", "py", "h", "js", "css", "svg"}, 300, rng,
                              min_size=200)
    dirs = sorted({p.parent for p in picked})
    rng.shuffle(dirs)
    return _zip_writers(out, dirs, rng)


# Generators added after a corpus's first build (name → the name of a function of (gen folder,
# rng), looked up when it runs so that tests can stand in for it), run in this order, each once:
# its own marker ``.done-<name>``.
_LATE = {"rtf": "_late_rtf", "audio7": "_late_audio", "zip7": "_late_zip", "office7": "_office_lo"}


def _late(out: Path, seed: int) -> None:
    """Run the `_LATE` generators that have not run yet, so an existing ``gen/`` folder gains
    their files without regenerating the rest."""
    for name, fn_name in _LATE.items():
        marker = out / f".done-{name}"
        if marker.exists():
            continue
        try:
            n = globals()[fn_name](out, random.Random(f"{seed}-{name}"))
            log.info("generator %s: %d files", name, n)
        except Exception as e:  # noqa: BLE001 — as in generate_all
            log.warning("generator %s failed: %s", name, e)
            continue
        marker.write_text("ok\n")


def generate_all(out: Path, seed: int = 0) -> None:
    """Run every generator into `out` (skipped when `out/.done` exists; the late generators,
    `_late`, each have their own marker)."""
    if (out / ".done").exists():
        _late(out, seed)
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    roots = [Path("/usr/share"), out.parent / "debs"]
    imgs = _files(roots, {"png", "jpg", "jpeg"}, 250, rng, min_size=2000, max_size=2 << 20)
    audios = _files(roots, {"oga", "ogg", "wav"}, 60, rng, min_size=2000)
    texts = _files([Path("/usr/share/doc"), Path("/usr/lib/python3"), out.parent / "debs"],
                   {"txt", "md", "rst", "py", "html", "c", "tex"}, 300, rng, min_size=500, max_size=1 << 20)
    bins = _files([Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/share")], {"so", "png", "ttf", "pdf"}, 100, rng,
                  min_size=500, max_size=4 << 20)
    jsons = _files([Path("/usr"), out.parent / "npm"], {"json"}, 300, rng, min_size=100, max_size=1 << 20)
    csvs = _files([Path("/usr"), Path(os.sys.prefix)], {"csv"}, 150, rng, min_size=200, max_size=4 << 20)
    steps = [("images", lambda: _images(out, imgs, rng)), ("media", lambda: _media(out, audios, imgs[:60], rng)),
             ("compress", lambda: _compress(out, texts[:200], bins, rng)),
             ("stdlib", lambda: _stdlib(out, texts, jsons, csvs, rng)), ("arrays", lambda: _arrays(out, imgs[:200], rng)),
             ("office", lambda: _office(out, texts[:250], csvs, rng)), ("classes", lambda: _classes(out, rng)),
             ("unknown", lambda: _unknown(out, rng)), ("extra", lambda: _extra_tools(out, imgs, texts, rng))]
    for name, fn in steps:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 — one failing generator must not lose the others' output
            log.warning("generator %s failed: %s", name, e)
    (out / ".done").write_text("ok\n")
    _late(out, seed)
