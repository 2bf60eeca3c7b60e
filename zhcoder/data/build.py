"""`zhcoder data build`: source code -> clean, deduplicated, decontaminated, FIM-ready token shards, on datatrove.

    zhcoder data build ~/src/myrepo ~/src/other corpus.jsonl --tokenizer qwen --out data/pretrain
    zhcoder data build ... --workers 16                              # local processes (default: all cores)
    zhcoder data build ... --executor slurm --partition cpu --time 04:00:00 --env-command "source .venv/bin/activate"
    zhcoder data build ... --executor ray                            # on the cluster `ray.init()` connects to

SRC is a folder (every file under it; in a git work tree only the files git tracks), or a JSONL / Parquet file of
records with a text field and optional path, repo and language fields (`--text-field` etc.; The Stack's
`content`, `max_stars_repo_path`, `max_stars_repo_name`, `lang` columns are recognised without flags).

Stages, each a datatrove executor (local, Slurm or Ray); a stage starts when the previous one has finished:
  1. clean     T tasks. Readers (zhcoder's file reader, datatrove's JsonlReader / ParquetReader) -> LanguageId
               (pygments' table, unknown and binary skipped) -> CodeFilters (line lengths, alphanumeric fraction,
               auto-generated, minified, size; zhcoder.data.filters) -> Redact (secrets, e-mails, IPs) ->
               Decontaminate (13-word overlap with the eval sets) -> Signatures (normalised sha256 + datasketch
               MinHash, to work/signatures) -> datatrove's JsonlWriter to work/clean/<bucket>/<rank>.jsonl, where
               bucket = hash(document id) mod T, or hash(repo) mod T with --repo-level so that stage 3 sees each
               repository whole.
  2. dedup     1 task. Exact, then near-duplicate (MinHash LSH, datasketch) over every signature in task order;
               the first file of each cluster is kept; the rest are listed in work/dedup/removed.jsonl.
  3. tokenize  T tasks. Task r reads bucket r, drops the duplicates, turns each file into a FIM sample (PSM or SPM,
               `--fim-rate`) or each repository into repo-level samples (`--repo-level`), tokenises, and writes
               token shards (zhcoder.data.shards) for the train and validation splits of that task.
  4. merge     1 task. Hard-links every task's shards, in task order, into OUT/train and OUT/validation, writes
               their index.json, OUT/removed.jsonl (every dropped file and why) and OUT/stats.json.

T (`--tasks`) depends on the input size only (8, or one per 128 MiB of input), never on `--workers`: the output is
byte-identical whatever the number of workers. FIM and the split use per-document seeds (a hash of the document's
id and `--seed`), so they do not depend on the order documents are processed in either.

Resuming: datatrove marks each finished task (OUT/work/logs/<stage>/completions); running the same command again
skips finished tasks and stages, so an interrupted build continues where it stopped. OUT/work/config.json holds
the settings: a different command on the same OUT is refused (use `--restart` to start over), unless the
build there never started a stage (it failed while checking its inputs or loading the eval sets). Token shards become
visible only through an index.json written last (atomically); OUT/train/index.json says "complete": true only
when the whole build is done, and zhcoder.data.shards refuses an incomplete split.

Memory is bounded by the number of documents, not their size: documents stream through every step; the dedup
stage holds one MinHash signature (num_perm x 8 bytes) plus its LSH band keys per kept file, and a 32-byte hash per
distinct file; repo-level grouping holds at most `REPO_BUFFERS` open repository chunks of `--repo-max-chars`.

Stats (OUT/stats.json): files read, kept, and dropped per reason (binary, unknown_language, encoding_error,
unreadable, each filter, special_tokens, decontaminated, exact_duplicate, near_duplicate); secrets redacted per
kind; files, characters and tokens per language; samples and tokens per split; the datatrove per-step stats.
Logs per task: OUT/work/logs/<stage>/logs/task_XXXXX.log.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from zhcoder import ZhcoderError
from zhcoder.data.config import BuildConfig, RunConfig  # noqa: F401 (the settings, declared there)
from zhcoder.data.steps import (CodeFilters, Decontaminate, DedupIndex, FileReader, LanguageId, Merge,
                                RecordAdapter, Redact, Signatures, SPLITS, Source, Tokenize)
from zhcoder.data.shards import write_json_atomic

RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".tox", ".mypy_cache"})
TASK_BYTES = 128 * 2**20      # one task per 128 MiB of input ...
MIN_TASKS = 8                 # ... and at least this many, so a small corpus still spreads over the cores


# --------------------------------------------------------------------------------------------------- inputs


def _git_tracked(folder: Path) -> list[str] | None:
    """Paths (relative to `folder`) of the files git tracks there, or None when `folder` is not in a work tree or
    git tracks nothing there (a folder of downloaded sources under an enclosing repository, ignored by it: all its
    files are read)."""
    try:
        inside = subprocess.run(["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    listed = subprocess.run(["git", "-C", str(folder), "ls-files", "-z", "--cached"], capture_output=True,
                            timeout=600)
    if listed.returncode != 0:
        raise ValueError(f"git ls-files failed in {folder}: {listed.stderr.decode(errors='replace').strip()}")
    names = [name for name in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if name]
    if not names:
        return None
    return sorted(name for name in names if (folder / name).is_file() and not (folder / name).is_symlink())


def _walk(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):           # symlinks are not followed
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                found.append(path.relative_to(folder).as_posix())
    return sorted(found)


def plan_sources(sources: Iterable[str]) -> list[Source]:
    """Classify each SRC; repository names are made unique (a second `src` becomes `src-2`)."""
    planned, names = [], Counter()
    for raw in sources:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"source {raw} does not exist (give folders, .jsonl or .parquet files)")
        path = path.resolve()
        if path.is_dir():
            names[path.name] += 1
            repo = path.name if names[path.name] == 1 else f"{path.name}-{names[path.name]}"
            planned.append(Source("files", str(path), repo))
        elif path.name.endswith(".parquet"):
            planned.append(Source("parquet", str(path), ""))
        elif path.name.endswith(RECORD_SUFFIXES):
            planned.append(Source("jsonl", str(path), ""))
        else:
            raise ValueError(f"source {raw} is neither a folder nor a .jsonl(.gz/.zst) or .parquet file")
    return planned


def write_manifest(sources: list[Source], path: Path) -> tuple[int, int]:
    """One JSON line per input file of the folder sources: source index, path, size. Returns (files, bytes) of all
    inputs, record files included."""
    files = total = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for number, source in enumerate(sources):
            if source.kind != "files":
                files += 1
                total += os.path.getsize(source.path)
                continue
            folder = Path(source.path)
            names = _git_tracked(folder)
            for name in names if names is not None else _walk(folder):
                try:
                    size = (folder / name).stat().st_size
                except OSError:
                    size = -1                             # counted as unreadable by the reader
                out.write(json.dumps({"source": number, "path": name, "size": size}, ensure_ascii=False) + "\n")
                files += 1
                total += max(size, 0)
    os.replace(tmp, path)
    return files, total


# ------------------------------------------------------------------------------------------------- driver


class BuildError(ZhcoderError):
    """A stage failed; the message names it and its log folder."""


def prepare(config: BuildConfig, restart: bool = False) -> dict:
    """Check the settings and inputs, then create OUT/work, write config.json, the manifest and plan.json (tasks,
    files, bytes). A rerun with the same settings reuses them; different settings are refused unless `restart`,
    or unless the earlier build never started (OUT/work/logs absent): then it is simply replaced."""
    config.check()
    sources = plan_sources(config.sources)         # inputs first: a bad one leaves nothing behind
    if config.tokenizer != "qwen" and not Path(config.tokenizer, "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {config.tokenizer} (give a tokenizer folder or 'qwen')")
    out = Path(config.out)
    work = out / "work"
    saved = work / "config.json"
    settings = json.loads(json.dumps(dataclasses.asdict(config)))        # as saved: tuples become lists
    if saved.exists():
        previous = json.loads(saved.read_text(encoding="utf-8"))
        if restart or (previous != settings and not started(out)):       # only ever delete what a build wrote
            discard(out)
        elif previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise ValueError(f"{out} holds a build with other settings ({', '.join(changed)}); "
                             "use the same command to resume it, --restart to start over, or another --out")
        else:
            return json.loads((work / "plan.json").read_text(encoding="utf-8"))
    if out.exists() and any(p.name != "work" for p in out.iterdir()):
        raise ValueError(f"--out {out} exists and is not a zhcoder data build; choose an empty or new folder")
    work.mkdir(parents=True, exist_ok=True)
    files, size = write_manifest(sources, work / "manifest.jsonl")
    tasks = config.tasks or max(MIN_TASKS, math.ceil(size / TASK_BYTES))
    plan = {"tasks": tasks, "files": files, "bytes": size, "sources": [dataclasses.asdict(s) for s in sources],
            "record_files": sum(s.kind != "files" for s in sources)}
    write_json_atomic(work / "plan.json", plan)
    write_json_atomic(saved, settings)                 # last: marks a valid plan
    return plan


def started(out: Path) -> bool:
    """Whether a stage of the build in `out` ever ran (or was submitted): it has logs."""
    return (out / "work" / "logs").exists()


def discard(out: Path) -> None:
    """Delete a build's own files in `out` (never anything else there)."""
    for name in ("work", *SPLITS):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("stats.json", "removed.jsonl"):
        (out / name).unlink(missing_ok=True)


def pipelines(config: BuildConfig, plan: dict) -> dict[str, tuple[list, int]]:
    """stage -> (datatrove pipeline, number of tasks)."""
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    work = str(Path(config.out, "work").resolve())
    tasks = plan["tasks"]
    sources = [Source(**s) for s in plan["sources"]]
    adapter = RecordAdapter({"text": config.text_field, "path": config.path_field, "repo": config.repo_field,
                             "language": config.language_field})
    readers: list[PipelineStep] = []
    if any(s.kind == "files" for s in sources):
        readers.append(FileReader(work, sources, config.filters.get("max_bytes")))
    for source in sources:
        if source.kind != "files":
            kind, extra = (JsonlReader, {"add_file_path": False}) if source.kind == "jsonl" else (ParquetReader, {})
            readers.append(kind(str(Path(source.path).parent), glob_pattern=Path(source.path).name,
                                recursive=False, adapter=adapter, **extra))
    clean = [*readers, LanguageId(work), CodeFilters(work, config.filters)]
    if config.redact:
        clean.append(Redact())
    if config.decontaminate:
        clean.append(Decontaminate(work, config.decontaminate_n, config.decontaminate_tasks, config.data_dir))
    clean += [Signatures(work, tasks, config.num_perm, config.shingle_size, enabled=config.dedup,
                         by_repo=config.repo_level),
              JsonlWriter(str(Path(work, "clean")), output_filename="${bucket}/${rank}.jsonl", compression=None)]
    return {
        "clean": (clean, tasks),
        "dedup": ([DedupIndex(work, tasks, config.near_threshold, config.num_perm, config.shingle_size,
                              enabled=config.dedup)], 1),
        "tokenize": ([Tokenize(work, dataclasses.asdict(config))], tasks),
        "merge": ([Merge(work, str(Path(config.out).resolve()), tasks, dataclasses.asdict(config))], 1),
    }


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor with each task's console log sent to its log file only (the build shows a
    progress bar instead)."""

    def _launch_run_for_rank(self, rank: int, ranks_q, completed=None, completed_lock=None):
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):
            return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)


def executors(config: BuildConfig, plan: dict, executor: str = "local", workers: int | None = None,
              options: dict | None = None) -> list[tuple[str, Any]]:
    """One datatrove executor per stage, chained with `depends=`; `options` go to the Slurm / Ray executor."""
    logs = Path(config.out, "work", "logs").resolve()
    chain, previous = [], None
    for stage, (pipeline, tasks) in pipelines(config, plan).items():
        common = {"pipeline": pipeline, "tasks": tasks, "logging_dir": str(logs / stage), "depends": previous}
        if executor == "local":
            made = QuietLocalExecutor(**common, workers=min(workers or os.cpu_count() or 1, tasks),
                                      start_method="forkserver")
        elif executor == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            made = SlurmPipelineExecutor(**common, job_name=f"zhcoder-{stage}", **(options or {}))
        elif executor == "ray":
            import importlib.util

            from datatrove.executor.ray import RayPipelineExecutor

            if importlib.util.find_spec("ray") is None:
                raise ValueError("--executor ray needs ray: pip install 'zhcoder[ray]'")
            made = RayPipelineExecutor(**common, **(options or {}))
        else:
            raise ValueError(f"--executor must be local, slurm or ray, got {executor!r}")
        chain.append((stage, made))
        previous = made
    return chain


def _run_with_progress(stage: str, executor, tasks: int, bar) -> None:
    """Run a local executor in a thread; advance the bar as completion markers appear."""
    done_dir = Path(executor.logging_dir.path, "completions")
    errors: list[BaseException] = []

    def target() -> None:
        try:
            executor.run()
        except BaseException as error:        # re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=target, name=f"zhcoder-data-{stage}", daemon=True)
    thread.start()
    shown = 0
    while thread.is_alive() or shown < tasks:
        done = len(list(done_dir.glob("*"))) if done_dir.is_dir() else 0
        if done > shown:
            bar.update(done - shown)
            shown = done
        if not thread.is_alive():
            break
        thread.join(0.2)
    if errors:
        raise BuildError(f"stage {stage} failed: {errors[0]} (logs in {Path(executor.logging_dir.path, 'logs')}); "
                           "run the same command again to resume") from errors[0]


def build(config: BuildConfig, *, workers: int | None = None, executor: str = "local", restart: bool = False,
          progress: bool = True, executor_options: dict | None = None) -> dict | None:
    """Run (or resume) a build; returns OUT/stats.json's content (None for Slurm, which only submits jobs)."""
    from datatrove.utils.logging import logger
    from tqdm import tqdm

    out, existed = Path(config.out), Path(config.out).exists()
    plan = prepare(config, restart=restart)
    try:
        chain = executors(config, plan, executor, workers, executor_options)    # loads the eval sets: may fail
    except BaseException:
        if not started(out):                    # a build that never started must not block the next command
            discard(out)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
        raise
    if executor == "slurm":
        chain[-1][1].run()                      # submits every stage, each depending on the previous one
        return None
    if executor == "ray":
        for _, made in chain:
            made.run()
    else:
        logger.remove()                         # datatrove's console log; per-task logs stay in OUT/work/logs
        try:
            total = sum(made.world_size for _, made in chain)
            with tqdm(total=total, unit="task", desc="data build", disable=not progress, dynamic_ncols=True) as bar:
                for stage, made in chain:
                    bar.set_description(f"data build: {stage}")
                    _run_with_progress(stage, made, made.world_size, bar)
        finally:
            from datatrove.utils.logging import setup_default_logger
            setup_default_logger()
    return json.loads(Path(config.out, "stats.json").read_text(encoding="utf-8"))


def warnings(stats: dict, config: BuildConfig) -> list[str]:
    """What a user should know about a finished build: an empty validation split."""
    if config.validation_fraction > 0 and stats["splits"]["validation"]["n_tokens"] == 0:
        return [f"the validation split is empty: {stats['kept_files']:,} kept files x --validation-fraction "
                f"{config.validation_fraction:g} held out none; raise --validation-fraction to get one"]
    return []


def summary(stats: dict) -> str:
    """A short human-readable report of a build's stats."""
    lines = [f"{stats['kept_files']:,} of {stats['documents_read']:,} documents kept (from {stats['input_files']:,} "
             f"input files); "
             f"{stats['splits']['train']['n_tokens']:,} train + {stats['splits']['validation']['n_tokens']:,} "
             f"validation tokens"]
    if stats["removed"]:
        lines.append("removed: " + ", ".join(f"{k} {v:,}" for k, v in stats["removed"].items()))
    if stats["redacted"]:
        lines.append("redacted: " + ", ".join(f"{k} {v:,}" for k, v in stats["redacted"].items()))
    top = list(stats["languages"].items())[:8]
    lines.append("languages: " + ", ".join(f"{k} {v['files']:,} files / {v['tokens']:,} tokens" for k, v in top))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("run `zhcoder data build --help`")
