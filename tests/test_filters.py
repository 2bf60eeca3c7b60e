"""Tests of zhcoder/data/filters.py: language identification, binary detection, decoding, quality filters.

    pytest -q tests/test_filters.py
"""

import dataclasses

import pytest

from zhcoder.data.filters import FILTER_NAMES, FilterConfig, check, decode, detect_language, is_binary

# file name -> expected canonical language: 60+ programming languages, plus Markdown and Text.
LANGUAGE_TABLE = {
    "main.py": "Python",
    "stubs.pyi": "Python",
    "app.js": "JavaScript",
    "module.mjs": "JavaScript",
    "view.jsx": "JavaScript",
    "index.ts": "TypeScript",
    "view.tsx": "TypeScript",
    "Main.java": "Java",
    "lib.c": "C",
    "lib.h": "C",
    "lib.cpp": "C++",
    "lib.cc": "C++",
    "lib.hpp": "C++",
    "Program.cs": "C#",
    "main.go": "Go",
    "lib.rs": "Rust",
    "app.rb": "Ruby",
    "index.php": "PHP",
    "App.swift": "Swift",
    "Main.kt": "Kotlin",
    "build.gradle.kts": "Kotlin",
    "Main.scala": "Scala",
    "AppDelegate.m": "Objective-C",
    "Bridge.mm": "Objective-C++",
    "analysis.r": "R",
    "analysis.R": "R",
    "solve.jl": "Julia",
    "init.lua": "Lua",
    "script.pl": "Perl",
    "Module.pm": "Perl",
    "build.sh": "Shell",
    "setup.bash": "Shell",
    "deploy.ps1": "PowerShell",
    "schema.sql": "SQL",
    "index.html": "HTML",
    "style.css": "CSS",
    "style.scss": "SCSS",
    "style.less": "Less",
    "Main.hs": "Haskell",
    "main.ml": "OCaml",
    "app.ex": "Elixir",
    "server.erl": "Erlang",
    "core.clj": "Clojure",
    "main.dart": "Dart",
    "build.groovy": "Groovy",
    "Module.vb": "Visual Basic .NET",
    "solver.f90": "Fortran",
    "legacy.f": "Fortran",
    "unit.pas": "Pascal",
    "pkg.adb": "Ada",
    "app.d": "D",
    "main.nim": "Nim",
    "main.zig": "Zig",
    "top.v": "Verilog",
    "top.sv": "SystemVerilog",
    "top.vhd": "VHDL",
    "boot.asm": "Assembly",
    "start.s": "Assembly",
    "Library.fs": "F#",
    "utils.lisp": "Common Lisp",
    "prog.scm": "Scheme",
    "main.rkt": "Racket",
    "app.coffee": "CoffeeScript",
    "kernel.cu": "CUDA",
    "Token.sol": "Solidity",
    "paper.tex": "TeX",
    "run.bat": "Batchfile",
    "proc.awk": "Awk",
    "app.tcl": "Tcl",
    "fast.pyx": "Cython",
    "Main.elm": "Elm",
    "Main.purs": "PureScript",
    "main.cr": "Crystal",
    "Main.idr": "Idris",
    "shader.hlsl": "HLSL",
    "shader.glsl": "GLSL",
    "App.vue": "Vue",
    "App.svelte": "Svelte",
    "init.el": "Emacs Lisp",
    "plugin.vim": "Vim Script",
    "default.nix": "Nix",
    "main.tf": "HCL",
    "api.proto": "Protocol Buffers",
    "schema.graphql": "GraphQL",
    "main.vala": "Vala",
    "report.sas": "SAS",
    "prog.cob": "COBOL",
    "player.gd": "GDScript",
    "Makefile": "Makefile",
    "rules.mk": "Makefile",
    "Dockerfile": "Dockerfile",
    "CMakeLists.txt": "CMake",
    "config.cmake": "CMake",
    "config.yaml": "YAML",
    "config.yml": "YAML",
    "package.json": "JSON",
    "pyproject.toml": "TOML",
    "pom.xml": "XML",
    "README.md": "Markdown",
    "notes.txt": "Text",
}


def test_language_table_covers_fifty_programming_languages():
    languages = set(LANGUAGE_TABLE.values()) - {"Markdown", "Text", "JSON", "YAML", "TOML", "XML"}
    assert len(languages) >= 50


@pytest.mark.parametrize("name, language", sorted(LANGUAGE_TABLE.items()))
def test_detect_language_by_file_name(name, language):
    assert detect_language(name) == language
    assert detect_language(f"some/repo/dir/{name}") == language


def test_detect_language_ignores_case_when_the_exact_name_is_unknown():
    assert detect_language("MAIN.PY") == "Python"
    assert detect_language("README.MD") == "Markdown"
    assert detect_language("Makefile") == "Makefile"


def test_detect_language_unknown_names():
    for name in ["photo.jpg", "archive.tar.gz", "data.bin", "LICENSE", "noextension", "weird.zzzq", "", "dir/"]:
        assert detect_language(name) is None, name
    # ambiguous extensions are left unlabelled rather than guessed
    assert detect_language("Account.cls") is None


def test_detect_language_from_shebang_when_name_says_nothing():
    assert detect_language("bin/tool", head=b"#!/usr/bin/env python3\nprint(1)\n") == "Python"
    assert detect_language("bin/run", head=b"#!/bin/bash -e\necho hi\n") == "Shell"
    assert detect_language("bin/serve", head=b"#!/usr/bin/env -S node --harmony\n") == "JavaScript"
    assert detect_language("bin/tool", head=b"print(1)\n") is None
    # the file name wins over the shebang
    assert detect_language("tool.rb", head=b"#!/usr/bin/env python\n") == "Ruby"


def test_is_binary():
    assert is_binary(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert is_binary(b"\x7fELF\x02\x01\x01\x00" + bytes(100))
    assert is_binary(bytes(range(1, 32)) * 10)  # control bytes, no NUL
    assert not is_binary(b"")
    assert not is_binary("def f():\n    return '你好'\n".encode("utf-8"))
    assert not is_binary(b"\x1b[31mred\x1b[0m log line\n")
    assert not is_binary("# 中文\r\n".encode("utf-16"))  # UTF-16 with BOM is text


def test_decode():
    assert decode("x = '你好'\n".encode("utf-8")) == "x = '你好'\n"
    assert decode(b"\xef\xbb\xbfprint(1)\n") == "print(1)\n"  # BOM dropped
    assert decode("# 中文\n".encode("utf-16")) == "# 中文\n"
    assert decode("x = '你好'\n".encode("gbk")) is None  # not UTF-8 -> encoding_error
    assert decode(b"caf\xe9\n") is None  # latin-1
    assert decode(b"") == ""


PYTHON_WITH_CHINESE = '''"""用户管理模块：提供用户的增删改查。"""

from dataclasses import dataclass


@dataclass
class User:
    """一个用户。"""

    name: str  # 用户名
    age: int  # 年龄


def find_adults(users: list[User]) -> list[User]:
    """返回所有成年用户（年龄大于等于 18 岁）。"""
    return [user for user in users if user.age >= 18]
'''


def test_normal_python_file_with_chinese_comments_is_kept():
    assert check(PYTHON_WITH_CHINESE, "src/users.py") is None
    assert check(PYTHON_WITH_CHINESE.replace("\n", "\r\n"), "src/users.py") is None


NORMAL_LINE = "    value = compute(value, other)  # step\n"


@pytest.mark.parametrize(
    "reason, text, path",
    [
        ("too_small", "x=1\n", "a.py"),
        ("too_small", "   \n\n\t\n", "a.py"),
        ("too_large", NORMAL_LINE * 30_000, "big.py"),  # 1.2 MB
        ("too_large", "x\n" * 100_001, "lines.py"),
        ("auto_generated", "// Code generated by protoc-gen-go. DO NOT EDIT.\n" + NORMAL_LINE * 20, "a.pb.go"),
        ("auto_generated", "# -*- coding: utf-8 -*-\n# 此文件由工具自动生成\n" + NORMAL_LINE * 20, "a.py"),
        ("auto_generated", "/**\n * @generated\n */\n" + NORMAL_LINE * 20, "a.js"),
        ("minified", "var a=1;" * 300 + "\n" + "function f(){return a}" * 30 + "\n", "bundle.js"),
        ("minified", "body{margin:0}\n" * 20, "site.min.css"),
        ("max_line_length", NORMAL_LINE * 20 + "x = '" + "a" * 1200 + "'\n", "data.py"),
        ("mean_line_length", ("y = " + "f(a, b) + " * 14 + "c\n") * 30, "long.py"),
        ("alphanumeric_fraction", "#" * 60 + "\n" + ("# ---- ++++ ==== ////\n" * 20), "art.py"),
    ],
)
def test_each_filter_removes_its_crafted_file(reason, text, path):
    assert reason in FILTER_NAMES
    assert check(text, path) == reason


def test_auto_generated_markers_only_in_the_header():
    text = NORMAL_LINE * 10 + "# this line says do not edit, but it is far below the header\n"
    assert check(text, "a.py") is None


def test_minified_only_for_minifiable_languages():
    one_long_line = "var a=1;" * 100 + "\n"  # 800 characters on one line
    assert check(one_long_line, "bundle.js") == "minified"
    # the same shape in Python is not "minified"; it falls to the line-length filters instead
    assert check(one_long_line, "script.py") == "mean_line_length"


def test_thresholds_are_honoured():
    text = NORMAL_LINE * 20 + "x = '" + "a" * 600 + "'\n"  # longest line 606, mean ~68
    assert check(text, "a.py") is None
    assert check(text, "a.py", FilterConfig(max_line_length=500)) == "max_line_length"
    assert check(text, "a.py", FilterConfig(max_mean_line_length=50)) == "mean_line_length"
    assert check(PYTHON_WITH_CHINESE, "a.py", FilterConfig(min_alphanumeric_fraction=0.95)) == "alphanumeric_fraction"
    assert check("x = 1\n", "a.py", FilterConfig(min_chars=3)) is None
    assert check(PYTHON_WITH_CHINESE, "a.py", FilterConfig(max_bytes=100)) == "too_large"
    assert check(PYTHON_WITH_CHINESE, "a.py", FilterConfig(max_lines=5)) == "too_large"
    generated = "// generated by hand-rolled tool\n" + NORMAL_LINE * 20
    assert check(generated, "a.js") == "auto_generated"
    assert check(generated, "a.js", FilterConfig(auto_generated_markers=("do not edit",))) is None
    assert check(generated, "a.js", FilterConfig(auto_generated_lines=None)) is None
    # None switches a filter off
    off = FilterConfig(max_line_length=None, max_mean_line_length=None, minified_mean_line_length=None)
    assert check("var a=1;" * 300 + "\n", "bundle.js", off) is None


def test_default_config_values_match_documented_sources():
    defaults = {f.name: f.default for f in dataclasses.fields(FilterConfig) if f.default is not dataclasses.MISSING}
    assert defaults["max_line_length"] == 1000
    assert defaults["max_mean_line_length"] == 100
    assert defaults["min_alphanumeric_fraction"] == 0.25
    assert defaults["max_bytes"] == 1_000_000
    assert defaults["max_lines"] == 100_000
