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
4. SFT data: docstring -> function chat pairs and plain prompt-completion rows mined from the corpus
   (synth_sft.py), plus the hand-written pairs in recipes/nano/sft_written.jsonl; `zhcoder data sft ... --template
   qwen3 --out WORK/sft` (both redone on every run: they take seconds).
5. WORK/pretrain/sources.json: per source, its license and the files and tokens it kept after filters and dedup
   (for the model card).
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


def source_stats(work: Path) -> list[dict]:
    """Files and tokens each source kept (the build's cleaned documents less its dedup removals), with licenses."""
    from tokenizers import Tokenizer

    listed = json.loads((HERE / "sources.json").read_text(encoding="utf-8"))
    licenses = {p["name"]: (p["license"], f"PyPI {p['name']} {p['version']}") for p in listed["pypi"]}
    licenses["python-stdlib"] = (listed["stdlib"]["license"], f"CPython {sys.version.split()[0]} standard library")
    licenses["codexglue"] = (listed["codexglue"]["license"], "CodeXGLUE code-to-code-trans training pairs")
    build = work / "pretrain" / "work"
    removed = {json.loads(line)["id"] for line in open(build / "dedup" / "removed.jsonl", encoding="utf-8")}
    tokenizer = Tokenizer.from_file(str(work / "tokenizer" / "tokenizer.json"))
    rows: dict[str, dict] = {}
    for file in sorted((build / "clean").glob("*/*.jsonl")):
        documents = [json.loads(line) for line in open(file, encoding="utf-8")]
        documents = [d for d in documents if d["id"] not in removed]
        for document, encoding in zip(documents, tokenizer.encode_batch([d["text"] for d in documents])):
            repo = document["metadata"]["repo"]
            license_, origin = licenses[repo]
            row = rows.setdefault(repo, {"source": repo, "origin": origin, "license": license_, "files": 0,
                                         "tokens": 0})
            row["files"] += 1
            row["tokens"] += len(encoding.ids)
    table = sorted(rows.values(), key=lambda r: -r["tokens"])
    (work / "pretrain" / "sources.json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="two packages, part of the stdlib, 200 pairs")
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--stats-only", action="store_true", help="only step 5, on a finished build")
    args = parser.parse_args()
    work = args.work.resolve()
    if args.stats_only:
        source_stats(work)
        return
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
    shutil.rmtree(work / "sft", ignore_errors=True)
    zhcoder("data", "sft", *inputs, "--tokenizer", work / "tokenizer", "--template", "qwen3", "--out", work / "sft",
            "--max-tokens", "1024", "--val-fraction", "0.02")
    for row in source_stats(work):
        print(f"{row['source']:32} {row['license']:12} {row['files']:6,} files {row['tokens']:12,} tokens")


if __name__ == "__main__":
    main()
