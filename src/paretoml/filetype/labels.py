"""Content-type knowledge base: label → MIME type, group, description, extensions, is_text.

Label names follow Magika's where the type is the same, so outputs of the two tools can be
compared one to one. The model predicts a subset of these (listed in the shipped
``model.json``); the rest are decided by rules (``empty``, ``directory``, ...) or are
fallbacks (``txt``, ``unknown``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ContentTypeInfo", "KNOWLEDGE_BASE", "info"]


@dataclass(frozen=True)
class ContentTypeInfo:
    """What a label means: ``label``, ``mime_type``, ``group``, ``description``, ``extensions``, ``is_text``."""

    label: str
    mime_type: str
    group: str
    description: str
    extensions: tuple[str, ...]
    is_text: bool


# label: (mime, group, description, "ext ext", is_text). One line per type, sorted by group.
_TABLE: dict[str, tuple[str, str, str, str, bool]] = {
    # rules and fallbacks
    "empty": ("inode/x-empty", "inode", "Empty file", "", False),
    "directory": ("inode/directory", "inode", "A directory", "", False),
    "symlink": ("inode/symlink", "inode", "Symbolic link", "", False),
    "unknown": ("application/octet-stream", "unknown", "Unknown binary data", "", False),
    "txt": ("text/plain", "text", "Generic text document", "txt", True),
    # code
    "asm": ("text/x-asm", "code", "Assembly", "s S asm", True),
    "awk": ("text/x-awk", "code", "Awk script", "awk", True),
    "batch": ("text/x-msdos-batch", "code", "DOS batch file", "bat cmd", True),
    "c": ("text/x-c", "code", "C source", "c h", True),
    "clojure": ("text/x-clojure", "code", "Clojure source", "clj cljs cljc", True),
    "cmake": ("text/x-cmake", "code", "CMake build file", "cmake", True),
    "coffeescript": ("text/coffeescript", "code", "CoffeeScript source", "coffee", True),
    "cpp": ("text/x-c++", "code", "C++ source", "cc cpp cxx hpp hh hxx", True),
    "cs": ("text/x-csharp", "code", "C# source", "cs", True),
    "css": ("text/css", "code", "CSS source", "css", True),
    "dart": ("text/x-dart", "code", "Dart source", "dart", True),
    "dockerfile": ("text/x-dockerfile", "code", "Dockerfile", "", True),
    "erlang": ("text/x-erlang", "code", "Erlang source", "erl hrl", True),
    "fortran": ("text/x-fortran", "code", "Fortran source", "f f90 f95 for", True),
    "go": ("text/x-golang", "code", "Golang source", "go", True),
    "gradle": ("text/x-groovy", "code", "Gradle source", "gradle", True),
    "groovy": ("text/x-groovy", "code", "Groovy source", "groovy", True),
    "haskell": ("text/x-haskell", "code", "Haskell source", "hs lhs", True),
    "java": ("text/x-java", "code", "Java source", "java", True),
    "javascript": ("application/javascript", "code", "JavaScript source", "js mjs cjs", True),
    "kotlin": ("text/x-kotlin", "code", "Kotlin source", "kt kts", True),
    "lisp": ("text/x-lisp", "code", "Lisp source", "lisp lsp l el", True),
    "lua": ("text/x-lua", "code", "Lua source", "lua", True),
    "m4": ("text/x-m4", "code", "GNU Macro", "m4", True),
    "makefile": ("text/x-makefile", "code", "Makefile source", "mk", True),
    "matlab": ("text/x-matlab", "code", "Matlab/Octave source", "m", True),
    "objectivec": ("text/x-objcsrc", "code", "ObjectiveC source", "m mm", True),
    "ocaml": ("text-ocaml", "code", "OCaml", "ml mli", True),
    "pascal": ("text/x-pascal", "code", "Pascal source", "pas pp", True),
    "perl": ("text/x-perl", "code", "Perl source", "pl pm", True),
    "php": ("text/x-php", "code", "PHP source", "php", True),
    "powershell": ("application/x-powershell", "code", "Powershell source", "ps1 psm1 psd1", True),
    "prolog": ("text/x-prolog", "code", "Prolog source", "pl pro", True),
    "proto": ("text/x-proto", "code", "Protocol buffer definition", "proto", True),
    "python": ("text/x-python", "code", "Python source", "py pyi", True),
    "r": ("text/x-r", "code", "R (language)", "r R", True),
    "ruby": ("application/x-ruby", "code", "Ruby source", "rb", True),
    "rust": ("application/x-rust", "code", "Rust source", "rs", True),
    "scala": ("application/x-scala", "code", "Scala source", "scala", True),
    "scss": ("text/x-scss", "code", "SCSS source", "scss", True),
    "shell": ("text/x-shellscript", "code", "Shell script", "sh bash zsh", True),
    "solidity": ("text/plain", "code", "Solidity source", "sol", True),
    "sql": ("application/x-sql", "code", "SQL source", "sql", True),
    "swift": ("text/x-swift", "code", "Swift", "swift", True),
    "tcl": ("application/x-tcl", "code", "Tickle", "tcl", True),
    "typescript": ("application/typescript", "code", "Typescript source", "ts mts cts", True),
    "vhdl": ("text/x-vhdl", "code", "VHDL source", "vhd vhdl", True),
    "verilog": ("text/x-verilog", "code", "Verilog source", "v sv", True),
    "vue": ("application/javascript", "code", "Vue source", "vue", True),
    "handlebars": ("text/x-handlebars-template", "code", "Handlebars source", "hbs handlebars", True),
    "erb": ("text/x-ruby", "code", "Embedded Ruby source", "erb", True),
    "jinja": ("text/x-jinja2-template", "code", "Jinja template", "jinja jinja2 j2", True),
    "twig": ("text/x-twig", "code", "Twig template", "twig", True),
    # text and data
    "bib": ("text/x-bibtex", "text", "BibTeX file", "bib", True),
    "csv": ("text/csv", "code", "CSV document", "csv", True),
    "diff": ("text/x-diff", "text", "Diff file", "diff patch", True),
    "gemfile": ("text/plain", "code", "Gemfile file", "", True),
    "gemspec": ("text/plain", "code", "Gemspec file", "gemspec", True),
    "html": ("text/html", "code", "HTML document", "html htm xhtml", True),
    "ignorefile": ("text/plain", "code", "Ignorefile", "", True),
    "ini": ("text/plain", "text", "INI configuration file", "ini", True),
    "ipynb": ("application/x-ipynb+json", "code", "Jupyter notebook", "ipynb", True),
    "json": ("application/json", "code", "JSON document", "json", True),
    "jsonl": ("application/json", "code", "JSONL document", "jsonl ndjson", True),
    "latex": ("text/x-tex", "text", "LaTeX document", "tex sty cls dtx ltx", True),
    "markdown": ("text/markdown", "text", "Markdown document", "md markdown", True),
    "pem": ("application/x-pem-file", "text", "PEM certificate", "pem crt", True),
    "po": ("text/gettext-translation", "text", "Portable Object (PO) for i18n", "po pot", True),
    "postscript": ("application/postscript", "document", "PostScript document", "ps eps", False),
    "rst": ("text/x-rst", "text", "ReStructuredText document", "rst", True),
    "rtf": ("text/rtf", "text", "Rich Text Format document", "rtf", True),
    "sum": ("text/plain", "text", "Checksum file", "md5 sha1 sha256 sum", True),
    "svg": ("image/svg+xml", "image", "SVG Scalable Vector Graphics image data", "svg", True),
    "toml": ("application/toml", "text", "Tom's obvious, minimal language", "toml", True),
    "tsv": ("text/tsv", "code", "TSV document", "tsv", True),
    "xml": ("text/xml", "code", "XML document", "xml", True),
    "yaml": ("application/x-yaml", "code", "YAML source", "yml yaml", True),
    "eml": ("message/rfc822", "text", "RFC 822 mail", "eml", True),
    "appleplist": ("application/x-plist", "application", "Apple property list", "plist", True),
    "srt": ("text/srt", "text", "SubRip Text Format", "srt", True),
    "vtt": ("text/vtt", "text", "Web Video Text Tracks", "vtt webvtt", True),
    # binaries: executables and bytecode
    "elf": ("application/x-executable-elf", "executable", "ELF executable", "elf so o", False),
    "pebin": ("application/x-dosexec", "executable", "PE Windows executable", "exe dll sys", False),
    "javabytecode": ("application/x-java-applet", "executable", "Java compiled bytecode", "class", False),
    "pythonbytecode": ("application/x-bytecode.python", "executable", "Python compiled bytecode", "pyc pyo", False),
    "wasm": ("application/wasm", "executable", "Web Assembly", "wasm", False),
    "ar": ("application/x-archive", "archive", "ar archive (static library)", "a", False),
    "macho": ("application/x-mach-o", "executable", "Mach-O executable", "dylib bundle so", False),
    "dex": ("application/x-android-dex", "executable", "Dalvik dex file", "dex", False),
    "lnk": ("application/x-ms-shortcut", "application", "MS Windows shortcut", "lnk", False),
    # archives and compression
    "bzip": ("application/x-bzip2", "archive", "bzip2 compressed data", "bz2 tbz2", False),
    "cab": ("application/vnd.ms-cab-compressed", "archive", "Microsoft Cabinet archive data", "cab", False),
    "deb": ("application/vnd.debian.binary-package", "archive", "Debian binary package", "deb", False),
    "gzip": ("application/gzip", "archive", "gzip compressed data", "gz gzip tgz", False),
    "iso": ("application/x-iso9660-image", "archive", "ISO 9660 CD-ROM filesystem data", "iso", False),
    "jar": ("application/java-archive", "archive", "Java archive data (JAR)", "jar", False),
    "lha": ("application/x-lha", "archive", "LHarc archive", "lha lzh", False),
    "rar": ("application/x-rar", "archive", "RAR archive data", "rar", False),
    "rpm": ("application/x-rpm", "archive", "RedHat Package Manager archive (RPM)", "rpm", False),
    "squashfs": ("application/octet-stream", "archive", "Squash filesystem", "sqsh squashfs", False),
    "xar": ("application/x-xar", "archive", "XAR archive compressed data", "xar pkg", False),
    "sevenzip": ("application/x-7z-compressed", "archive", "7-zip archive data", "7z", False),
    "tar": ("application/x-tar", "archive", "POSIX tar archive", "tar", False),
    "xz": ("application/x-xz", "archive", "XZ compressed data", "xz txz", False),
    "zip": ("application/zip", "archive", "Zip archive data", "zip", False),
    "zlibstream": ("application/zlib", "application", "zlib compressed data", "", False),
    "zstd": ("application/zstd", "archive", "Zstandard compressed data", "zst", False),
    "epub": ("application/epub+zip", "document", "EPUB document", "epub", False),
    # documents
    "pdf": ("application/pdf", "document", "PDF document", "pdf", False),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "document",
             "Microsoft Word 2007+ document", "docx docm", False),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "document",
             "Microsoft Excel 2007+ document", "xlsx xlsm", False),
    "pptx": ("application/vnd.openxmlformats-officedocument.presentationml.presentation", "document",
             "Microsoft PowerPoint 2007+ document", "pptx pptm", False),
    "odt": ("application/vnd.oasis.opendocument.text", "document", "OpenDocument Text", "odt ott", False),
    "ods": ("application/vnd.oasis.opendocument.spreadsheet", "document", "OpenDocument Spreadsheet", "ods ots", False),
    "odp": ("application/vnd.oasis.opendocument.presentation", "document", "OpenDocument Presentation", "odp otp", False),
    "chm": ("application/chm", "document", "MS Windows HtmlHelp Data", "chm", False),
    "xls": ("application/vnd.ms-excel", "document", "Microsoft Excel CDF document", "xls", False),
    # images
    "bmp": ("image/bmp", "image", "BMP image data", "bmp", False),
    "gif": ("image/gif", "image", "GIF image data", "gif", False),
    "icns": ("image/x-icns", "image", "Mac OS X icon", "icns", False),
    "ico": ("image/vnd.microsoft.icon", "image", "MS Windows icon resource", "ico", False),
    "jp2": ("image/jpeg2000", "image", "jpeg2000", "jp2", False),
    "jpeg": ("image/jpeg", "image", "JPEG image data", "jpg jpeg", False),
    "pcx": ("image/x-pcx", "image", "PCX image data", "pcx", False),
    "png": ("image/png", "image", "PNG image data", "png", False),
    "ppm": ("image/x-portable-anymap", "image", "Netpbm image data", "ppm pgm pbm pnm", False),
    "tga": ("image/x-tga", "image", "Targa image data", "tga", False),
    "tiff": ("image/tiff", "image", "TIFF image data", "tif tiff", False),
    "webp": ("image/webp", "image", "WebP data", "webp", False),
    "psd": ("image/vnd.adobe.photoshop", "image", "Adobe Photoshop image", "psd", False),
    "xcf": ("image/x-xcf", "image", "GIMP XCF image data", "xcf", False),
    # audio and video
    "aiff": ("audio/x-aiff", "audio", "AIFF audio data", "aif aiff", False),
    "flac": ("audio/flac", "audio", "FLAC audio bitstream data", "flac", False),
    "mp3": ("audio/mpeg", "audio", "MP3 media file", "mp3", False),
    "ogg": ("audio/ogg", "audio", "Ogg data", "ogg oga ogv opus", False),
    "wav": ("audio/x-wav", "audio", "Waveform Audio file (WAV)", "wav", False),
    "midi": ("audio/midi", "audio", "Midi", "mid midi", False),
    "mp4": ("video/mp4", "video", "MP4 media file", "mp4 m4a m4v", False),
    "mkv": ("video/x-matroska", "video", "Matroska", "mkv", False),
    "webm": ("video/webm", "video", "WebM media file", "webm", False),
    "flv": ("video/x-flv", "video", "Flash Video", "flv", False),
    "3gp": ("video/3gpp", "video", "3GPP multimedia file", "3gp", False),
    "qt": ("video/quicktime", "video", "QuickTime", "mov qt", False),
    "avi": ("video/x-msvideo", "video", "AVI video", "avi", False),
    # fonts
    "otf": ("font/otf", "font", "OpenType font", "otf", False),
    "ttf": ("font/sfnt", "font", "TrueType Font data", "ttf ttc", False),
    "woff": ("font/woff", "font", "Web Open Font Format", "woff", False),
    "woff2": ("font/woff2", "font", "Web Open Font Format v2", "woff2", False),
    "pfb": ("application/x-font-type1", "font", "PostScript Type 1 font", "pfb t1", False),
    # data and applications
    "applebplist": ("application/x-bplist", "application", "Apple binary property list", "bplist plist", False),
    "npy": ("application/octet-stream", "application", "Numpy Array", "npy", False),
    "npz": ("application/octet-stream", "application", "Numpy Arrays Archive", "npz", False),
    "pickle": ("application/octet-stream", "application", "Python pickle", "pkl pickle", False),
    "pytorch": ("application/octet-stream", "application", "Pytorch storage file", "pt pth", False),
    "sqlite": ("application/x-sqlite3", "application", "SQLITE database", "sqlite sqlite3 db", False),
    "pcap": ("application/vnd.tcpdump.pcap", "application", "pcap capture file", "pcap pcapng", False),
    "gettext": ("application/x-gettext-translation", "application", "GNU gettext message catalogue", "mo gmo", False),
    "terminfo": ("application/x-terminfo", "application", "Compiled terminfo entry", "", False),
    "tzif": ("application/x-tzif", "application", "Timezone information (TZif)", "", False),
}

KNOWLEDGE_BASE: dict[str, ContentTypeInfo] = {
    k: ContentTypeInfo(k, m, g, d, tuple(e.split()), t) for k, (m, g, d, e, t) in _TABLE.items()
}


def info(label: str) -> ContentTypeInfo:
    """The `ContentTypeInfo` of `label`; unknown labels map to the ``unknown`` entry's fields."""
    got = KNOWLEDGE_BASE.get(label)
    if got is None:
        base = KNOWLEDGE_BASE["unknown"]
        return ContentTypeInfo(label, base.mime_type, base.group, label, (), False)
    return got
