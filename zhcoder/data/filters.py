"""Code-corpus building blocks: language identification, binary detection, decoding and quality filters.

Pure functions, no I/O: the corpus builder (a datatrove pipeline step, later) reads a file's bytes and calls

    if is_binary(data):              -> skip, count "binary"
    language = detect_language(path, head=data[:1024])
    if language is None:             -> skip, count "unknown_language"
    text = decode(data)
    if text is None:                 -> skip, count "encoding_error"
    reason = check(text, path, config, language=language)
    if reason is not None:           -> skip, count reason   (e.g. "max_line_length")

Language identification (`detect_language`) uses pygments' lexer table (`pygments.lexers.get_lexer_for_filename`,
which matches the file-name globs of `pygments.lexers._mapping.LEXERS`), so ~500 languages and well-known file
names (Makefile, Dockerfile, CMakeLists.txt, ...) are covered by a maintained table. On top of it:
  * `EXTENSION_OVERRIDES`: a small table for extensions pygments resolves to a rarer language by glob priority
    (`.pl` -> Prolog, `.r` -> REBOL, `.fs` -> Forth, `.sql` -> Transact-SQL, ...) and pins the most common ones;
  * `CANONICAL_NAMES`: pygments lexer names folded into one canonical language name (`Bash` -> `Shell`,
    `FortranFixed` -> `Fortran`, `Text only` -> `Text`, `S` -> `R`, ...);
  * a shebang line (`#!/usr/bin/env python3`) in `head` identifies extension-less scripts.

Filter defaults (`FilterConfig`), with their sources:
  max_line_length = 1000          Codex (Chen et al. 2021, sec. 3.1); bigcode-dataset preprocessing "basic"
                                  filter used for The Stack / StarCoder (max_line_length=1000); DeepSeek-Coder sec. 2.1
  max_mean_line_length = 100      same sources (mean_line_length=100)
  min_alphanumeric_fraction = 0.25  same sources (alpha_num_threshold=0.25); Python's str.isalnum, so Chinese
                                  characters count as alphanumeric
  max_bytes = 1_000_000           The Stack v1 (Kocetkov et al. 2022) and Codex keep files under 1 MB
  max_lines = 100_000             zhcoder's choice, a guard for line-per-record dumps (no published value found;
                                  at normal line lengths the 1 MB limit fires first)
  min_chars = 20                  zhcoder's choice (no published value): fewer than 20 non-whitespace characters
                                  carry no code worth training on
  auto_generated_markers, first 5 lines   keyword search in the file header as in codeparrot/github-code-clean
                                  and StarCoder's data cleaning; markers extended with "@generated" (Meta's
                                  convention) and the Chinese "自动生成"
  minified: mean line length >= 200 and longest line >= 500, or a `.min.` file name, for JavaScript/CSS/JSON-like
                                  languages -- zhcoder's choice; the intent (drop minified bundles) is StarCoder's
Filters run in the order: too_small, too_large, auto_generated, minified, max_line_length, mean_line_length,
alphanumeric_fraction; `check` returns the first that fires, so a minified bundle is reported as "minified"
rather than "max_line_length".

    pytest -q tests/test_filters.py
"""

from __future__ import annotations

import codecs
import functools
import os
import re
from dataclasses import dataclass, field

from pygments.lexers import get_lexer_for_filename
from pygments.lexers._mapping import LEXERS
from pygments.util import ClassNotFound

# --- language identification -------------------------------------------------------------------------------

# Extensions where pygments' glob priority picks a rarer language, or where we pin the common reading.
# Keys are lower-case extensions, except where case carries meaning (none today: `.R` and `.r` are both R).
EXTENSION_OVERRIDES: dict[str, str] = {
    ".h": "C",  # also C++ / Objective-C headers; C is the majority reading (as GitHub linguist's default)
    ".m": "Objective-C",  # pygments: Objective-C / MATLAB / Mason / Mathematica
    ".mm": "Objective-C++",
    ".ts": "TypeScript",  # pygments: TypeScript / Qt translation (.ts XML)
    ".tsx": "TypeScript",
    ".rs": "Rust",
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".txt": "Text",
    ".text": "Text",
    ".r": "R",  # pygments: REBOL for .r, S for .R
    ".pl": "Perl",  # pygments: Prolog
    ".pm": "Perl",  # pygments: Promela
    ".t": "Perl",  # pygments: Perl / Turing / TADS
    ".sql": "SQL",  # pygments: Transact-SQL
    ".fs": "F#",  # pygments: Forth
    ".fsi": "F#",
    ".v": "Verilog",  # pygments: Verilog / Coq
    ".cls": None,  # Apex / TeX class / VBA / OpenEdge: too ambiguous to label
    ".inc": None,  # PHP / Pascal / assembly / C includes
    ".pro": None,  # Prolog / IDL / Qt project files
    ".for": "Fortran",
    ".f77": "Fortran",
    ".glsl": "GLSL",
    ".vert": "GLSL",
    ".frag": "GLSL",
    ".svelte": "Svelte",
    ".ipynb": None,  # notebooks are JSON with outputs: a separate converter, not raw text
    ".jsonl": "JSON Lines",
    ".inl": "C++",
    ".y": "Yacc",
    ".l": "Lex",
    ".sc": "Scala",  # pygments: SuperCollider; Scala worksheets / Ammonite scripts are far more common
}

# pygments lexer name -> canonical language name (only where they differ).
CANONICAL_NAMES: dict[str, str] = {
    "Text only": "Text", "Bash": "Shell", "Bash Session": "Shell", "Tcsh": "Shell", "S": "R", "Transact-SQL": "SQL",
    "MySQL": "SQL", "PostgreSQL SQL dialect": "SQL", "FortranFixed": "Fortran", "COBOLFree": "COBOL", "Nimrod": "Nim",
    "verilog": "Verilog", "systemverilog": "SystemVerilog", "vhdl": "VHDL", "NASM": "Assembly", "GAS": "Assembly",
    "TASM": "Assembly", "Docker": "Dockerfile", "LessCss": "Less", "Lean4": "Lean", "Lean3": "Lean",
    "VB.net": "Visual Basic .NET", "Delphi": "Pascal", "Protocol Buffer": "Protocol Buffers", "TSX": "TypeScript",
    "JSX": "JavaScript", "JSON-LD": "JSON", "Python 2.x": "Python", "Python console session": "Python",
    "EmacsLisp": "Emacs Lisp", "VimL": "Vim Script", "Terraform": "HCL", "ReasonML": "Reason", "Matlab": "MATLAB",
}

# Interpreters named on a shebang line -> canonical language (looked up after stripping version digits).
SHEBANG_INTERPRETERS: dict[str, str] = {
    "python": "Python", "pypy": "Python", "node": "JavaScript", "nodejs": "JavaScript", "deno": "TypeScript",
    "bun": "JavaScript", "sh": "Shell", "bash": "Shell", "zsh": "Shell", "ksh": "Shell", "dash": "Shell",
    "fish": "Fish", "perl": "Perl", "ruby": "Ruby", "php": "PHP", "lua": "Lua", "rscript": "R", "julia": "Julia",
    "tclsh": "Tcl", "awk": "Awk", "gawk": "Awk", "groovy": "Groovy", "scala": "Scala", "elixir": "Elixir",
    "escript": "Erlang", "pwsh": "PowerShell", "swift": "Swift", "make": "Makefile",
}

# File names pygments lists literally (no wildcard), e.g. "CMakeLists.txt", "Makefile": these win over the
# extension overrides, so CMakeLists.txt stays CMake instead of becoming Text.
_LITERAL_FILENAMES = frozenset(
    pattern
    for _module, _name, _aliases, patterns, _mimes in LEXERS.values()
    for pattern in patterns
    if not any(ch in pattern for ch in "*?[")
)


def canonical_language(pygments_name: str) -> str:
    """Fold a pygments lexer name into zhcoder's canonical language name."""
    return CANONICAL_NAMES.get(pygments_name, pygments_name)


@functools.lru_cache(maxsize=65536)
def _language_from_name(basename: str) -> str | None:
    if basename not in _LITERAL_FILENAMES:
        extension = os.path.splitext(basename)[1].lower()
        if extension in EXTENSION_OVERRIDES:
            return EXTENSION_OVERRIDES[extension]
    try:
        lexer = get_lexer_for_filename(basename)
    except ClassNotFound:
        return None
    return canonical_language(lexer.name)


def _language_from_shebang(head: bytes) -> str | None:
    if not head.startswith(b"#!"):
        return None
    first_line = head.split(b"\n", 1)[0][2:].decode("utf-8", "replace").strip()
    words = first_line.split()
    if not words:
        return None
    program = os.path.basename(words[0])
    if program == "env":  # "#!/usr/bin/env -S python3 -u" -> python3
        arguments = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
        if not arguments:
            return None
        program = os.path.basename(arguments[0])
    program = re.sub(r"[\d.]+$", "", program.lower())  # python3.11 -> python
    return SHEBANG_INTERPRETERS.get(program)


def detect_language(path: str, head: bytes | None = None) -> str | None:
    """The canonical language of a file from its name (pygments' table + overrides), else from a shebang line
    in `head` (the file's first bytes); None when unknown."""
    basename = os.path.basename(path.replace("\\", "/"))
    language = _language_from_name(basename) if basename else None
    if language is None and basename and basename != basename.lower():
        language = _language_from_name(basename.lower())  # MAIN.PY, README.MD: pygments' globs are case-sensitive
    if language is None and head:
        language = _language_from_shebang(head)
    return language


# --- binary detection and decoding -------------------------------------------------------------------------

_BINARY_SNIFF_BYTES = 8000  # git's buffer_is_binary() looks for a NUL in the first 8000 bytes
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Bytes that occur in text: printable ASCII, tab, newline, carriage return, form feed, escape, backspace,
# and every byte >= 0x80 (multi-byte UTF-8 and legacy encodings).
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x7F)) | set(range(0x80, 0x100)))


def is_binary(data: bytes) -> bool:
    """True when `data` (a whole file or its head) is not text: a NUL byte in the first 8000 bytes (git's rule;
    UTF-16 files with a BOM are exempt), or more than 30% control bytes (the rule of `perl -B` and `file`)."""
    sample = data[:_BINARY_SNIFF_BYTES]
    if not sample:
        return False
    if sample.startswith(_UTF16_BOMS):
        return False
    if b"\x00" in sample:
        return True
    control_bytes = len(sample.translate(None, _TEXT_BYTES))
    return control_bytes / len(sample) > 0.30


def decode(data: bytes) -> str | None:
    """Strict UTF-8 (a UTF-8 BOM is dropped; UTF-16 with a BOM is accepted too); None on any decoding error,
    which the caller counts as "encoding_error". No lossy replacement: a file is used exactly or not at all."""
    try:
        if data.startswith(codecs.BOM_UTF8):
            return data[len(codecs.BOM_UTF8) :].decode("utf-8")
        if data.startswith(_UTF16_BOMS):
            return data.decode("utf-16")  # the codec reads and drops the BOM
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- quality filters ---------------------------------------------------------------------------------------

DEFAULT_AUTO_GENERATED_MARKERS = ("auto-generated", "autogenerated", "automatically generated",
                                  "generated automatically", "this file is generated", "generated by", "do not edit",
                                  "@generated", "自动生成")
DEFAULT_MINIFIABLE_LANGUAGES = ("JavaScript", "TypeScript", "CSS", "SCSS", "Less", "Sass", "JSON", "JSON5",
                                "JSON Lines", "HTML", "XML", "SVG")


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class FilterConfig:
    """Thresholds of `check`; every default's source is in the module docstring. Set a threshold to None to
    switch that filter off. Each field's help is the `zhcoder data build` option's."""

    max_line_length: int | None = _setting(1000, "longest line allowed, in characters")
    max_mean_line_length: float | None = _setting(100.0, "mean line length allowed")
    min_alphanumeric_fraction: float | None = _setting(0.25, "least share of letters and digits")
    min_chars: int | None = _setting(20, "least non-whitespace characters")
    max_bytes: int | None = _setting(1_000_000, "largest UTF-8 size of a file")
    max_lines: int | None = _setting(100_000, "most lines in a file")
    auto_generated_lines: int | None = _setting(5, "first lines searched for auto-generated markers")
    auto_generated_markers: tuple[str, ...] = _setting(
        DEFAULT_AUTO_GENERATED_MARKERS, "comma-separated auto-generated markers (case-insensitive)")
    minified_languages: tuple[str, ...] = _setting(DEFAULT_MINIFIABLE_LANGUAGES,
                                                   "comma-separated languages checked for minified code")
    minified_mean_line_length: float | None = _setting(200.0, "mean line length above which such a file is minified")
    minified_min_longest_line: int = _setting(500, "... when its longest line is at least this long")


FILTER_NAMES = ("too_small", "too_large", "auto_generated", "minified", "max_line_length", "mean_line_length",
                "alphanumeric_fraction")


def _line_lengths(text: str) -> list[int]:
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # a trailing newline does not start another line
    return [len(line) - 1 if line.endswith("\r") else len(line) for line in lines]


def _is_auto_generated(text: str, config: FilterConfig) -> bool:
    if not config.auto_generated_lines or not config.auto_generated_markers:
        return False
    header = "\n".join(text.split("\n", config.auto_generated_lines)[: config.auto_generated_lines]).lower()
    return any(marker.lower() in header for marker in config.auto_generated_markers)


def check(text: str, path: str, config: FilterConfig | None = None, language: str | None = None) -> str | None:
    """The name of the first filter (in `FILTER_NAMES` order) that removes this file, or None to keep it.
    `language` defaults to `detect_language(path)`; it only matters for the minified filter."""
    config = config or FilterConfig()

    if config.min_chars is not None and sum(not ch.isspace() for ch in text) < config.min_chars:
        return "too_small"
    if config.max_bytes is not None and len(text) > config.max_bytes // 4:  # cheap bound before encoding
        if len(text.encode("utf-8")) > config.max_bytes:
            return "too_large"
    line_lengths = _line_lengths(text)
    if config.max_lines is not None and len(line_lengths) > config.max_lines:
        return "too_large"

    if _is_auto_generated(text, config):
        return "auto_generated"

    longest_line = max(line_lengths)
    mean_line_length = sum(line_lengths) / len(line_lengths)

    if config.minified_mean_line_length is not None:
        if language is None:
            language = detect_language(path)
        if language in config.minified_languages:
            basename = os.path.basename(path).lower()
            if ".min." in basename or (
                mean_line_length >= config.minified_mean_line_length
                and longest_line >= config.minified_min_longest_line
            ):
                return "minified"

    if config.max_line_length is not None and longest_line > config.max_line_length:
        return "max_line_length"
    if config.max_mean_line_length is not None and mean_line_length > config.max_mean_line_length:
        return "mean_line_length"
    if config.min_alphanumeric_fraction is not None and text:
        alphanumeric = sum(ch.isalnum() for ch in text)
        if alphanumeric / len(text) < config.min_alphanumeric_fraction:
            return "alphanumeric_fraction"
    return None
