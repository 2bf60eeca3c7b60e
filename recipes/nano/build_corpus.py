"""Rebuild zhcoder-nano's data from scratch: sources -> tokenizer -> pre-training shards -> SFT shards.

    python recipes/nano/build_corpus.py --work /tmp/nano            # the full corpus (PyPI sdists are downloaded)
    python recipes/nano/build_corpus.py --work /tmp/nano-tiny --tiny # a few packages, for testing the recipe

Steps, each a zhcoder command (see recipes/nano/README.md):
1. sources (recipes/nano/sources.json): the PyPI sdists listed there, unpacked into WORK/src/<package>; a copy of
   this interpreter's standard library (WORK/src/python-stdlib); CodeXGLUE's Java/C# training pairs as JSONL
   records (WORK/codexglue.jsonl, one document per method).
2. `zhcoder tokenizer train WORK/src --vocab-size 16384 --out WORK/tokenizer` (byte-level BPE, Qwen's regex and
   special tokens).
3. `zhcoder data build WORK/src/* WORK/codexglue.jsonl --tokenizer WORK/tokenizer --out WORK/pretrain`
   (filters, secrets, decontamination against every evaluation set, dedup, FIM 0.5; the line-length filters are
   relaxed because CodeXGLUE's methods are single lines).
4. SFT pairs: docstring -> function pairs mined from the corpus (synth_sft.py), plus the hand-written pairs in
   recipes/nano/sft_written.jsonl; `zhcoder data sft ... --template qwen3 --out WORK/sft`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data"


def zhcoder(*args: object) -> None:
    command = [sys.executable, "-m", "zhcoder.cli", *map(str, args)]
    print("+", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def sources(work: Path, tiny: bool) -> None:
    listed = json.loads((HERE / "sources.json").read_text(encoding="utf-8"))
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    packages = listed["pypi"][:2] if tiny else listed["pypi"]
    downloads = work / "sdists"
    for package in packages:
        target = src / package["name"]
        if target.exists():
            continue
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                        "-d", str(downloads), f"{package['name']}=={package['version']}"], check=True)
        archive = next(p for p in downloads.iterdir() if p.name.lower().replace("_", "-").startswith(
            package["name"].lower().replace("_", "-") + "-" + package["version"]))
        with tarfile.open(archive) as tar:
            tar.extractall(work / "unpacked", filter="data")
        shutil.move(str(work / "unpacked" / archive.name.removesuffix(".tar.gz")), target)
    stdlib = src / "python-stdlib"
    if not stdlib.exists():
        origin = Path(sysconfig.get_paths()["stdlib"])
        keep = ("json", "email", "http") if tiny else None
        shutil.copytree(origin, stdlib, symlinks=True, ignore=lambda folder, names: [
            n for n in names if n in ("site-packages", "__pycache__", "dist-packages", "idlelib")
            or (keep and Path(folder) == origin and (Path(folder, n).is_dir() and n not in keep))])
    records = work / "codexglue.jsonl"
    if not records.exists():
        java = (DATA / "codexglue" / "train.java-cs.txt.java").read_text(encoding="utf-8").splitlines()
        cs = (DATA / "codexglue" / "train.java-cs.txt.cs").read_text(encoding="utf-8").splitlines()
        count = 200 if tiny else len(java)
        with open(records, "w", encoding="utf-8") as out:
            for i, (j, c) in enumerate(zip(java[:count], cs[:count])):
                out.write(json.dumps({"text": j + "\n", "path": f"Pair{i}.java", "language": "java",
                                      "repo": "codexglue"}) + "\n")
                out.write(json.dumps({"text": c + "\n", "path": f"Pair{i}.cs", "language": "csharp",
                                      "repo": "codexglue"}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="two packages, part of the stdlib, 200 pairs")
    parser.add_argument("--vocab-size", type=int, default=16384)
    args = parser.parse_args()
    work = args.work.resolve()
    sources(work, args.tiny)
    if not (work / "tokenizer" / "tokenizer.json").exists():
        zhcoder("tokenizer", "train", work / "src", "--vocab-size", 2048 if args.tiny else args.vocab_size,
                "--out", work / "tokenizer")
    if not (work / "pretrain" / "train" / "index.json").exists():
        zhcoder("data", "build", *sorted((work / "src").iterdir()), work / "codexglue.jsonl", "--tokenizer",
                work / "tokenizer", "--out", work / "pretrain", "--data-dir", DATA, "--validation-fraction", "0.01",
                # CodeXGLUE's methods are one line each: line-length filters would drop them all
                "--max-mean-line-length", "0", "--max-line-length", "4000")
    pairs = work / "sft_mined.jsonl"
    subprocess.run([sys.executable, str(HERE / "synth_sft.py"), str(work / "src"), "--out", str(pairs),
                    "--removed", str(work / "pretrain" / "removed.jsonl")], check=True)
    written = HERE / "sft_written.jsonl"
    inputs = [pairs] + ([written] if written.exists() else [])
    if not (work / "sft" / "train" / "index.json").exists():
        zhcoder("data", "sft", *inputs, "--tokenizer", work / "tokenizer", "--template", "qwen3", "--out",
                work / "sft", "--max-tokens", "1024", "--val-fraction", "0.02")


if __name__ == "__main__":
    main()
