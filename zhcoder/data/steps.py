"""The datatrove pipeline steps of `zhcoder data build` (zhcoder.data.build plans and runs them).

Stage 1 (clean), in this order: FileReader (folders) and datatrove's JsonlReader / ParquetReader with RecordAdapter
(records) -> LanguageId -> CodeFilters -> Redact -> Decontaminate -> Signatures -> datatrove's JsonlWriter.
Stage 2: DedupIndex.  Stage 3: Tokenize.  Stage 4: Merge (shards, removed.jsonl, stats.json).

Every step that drops documents counts the reason ("dropped/<reason>" in datatrove's stats) and logs the document
id to work/removed/<step>-<rank>.jsonl. Steps hold only plain settings (and the decontamination index), so
datatrove can ship them to worker processes, Slurm jobs or Ray tasks.

    pytest -q tests/test_data_build.py
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from zhcoder.data.filters import FilterConfig, canonical_language, check, decode, detect_language, is_binary
from zhcoder.data.shards import FORMAT, INDEX_NAME, VERSION, ShardWriter, read_index, token_dtype, write_json_atomic

STAGES = ("clean", "dedup", "tokenize", "merge")
SPLITS = ("train", "validation")
REPO_BUFFERS = 256            # most repository chunks held open at once when building repo-level samples
# Record fields recognised without flags, in order of preference (The Stack / StarCoderData use the later ones).
RECORD_FIELDS = {"text": ("text", "content"), "path": ("path", "max_stars_repo_path", "file_path"),
                 "repo": ("repo", "repo_name", "max_stars_repo_name"), "language": ("language", "lang")}


@dataclasses.dataclass
class Source:
    kind: str        # "files" | "jsonl" | "parquet"
    path: str        # absolute
    repo: str        # repository name for "files" sources


def _stable_hash(*parts: Any) -> int:
    """A 64-bit hash identical in every process and run (Python's hash() is salted)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _unit(*parts: Any) -> float:
    """A stable pseudo-random number in [0, 1) from `parts`."""
    return _stable_hash(*parts) / 2**64


def _jsonl(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


class _Step(PipelineStep):
    """A datatrove step that may drop documents: each drop is counted ("dropped/<reason>") and logged, with the
    document id, to work/removed/<step>-<rank>.jsonl (merged into OUT/removed.jsonl at the end)."""

    type = "🧑‍💻 - ZHCODER"
    log_name = "step"

    def __init__(self, work: str):
        super().__init__()
        self.work = work
        self._log = None

    def drop(self, doc_id: str, reason: str, **detail: Any) -> None:
        self.stat_update(f"dropped/{reason}")
        self._log.write(_jsonl({"id": doc_id, "reason": reason, **detail}))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        folder = Path(self.work, "removed")
        folder.mkdir(parents=True, exist_ok=True)
        self._log = open(folder / f"{self.log_name}-{rank:05d}.jsonl", "w", encoding="utf-8")
        try:
            yield from self.documents(data, rank, world_size)
        finally:
            self._log.close()
            self._log = None

    def documents(self, data: DocumentsPipeline, rank: int, world_size: int) -> DocumentsPipeline:
        """The documents this step passes on: by default `process` of each input document."""
        for doc in data or ():
            with self.track_time():
                kept = self.process(doc)
            if kept is not None:
                yield kept

    def process(self, doc: Document) -> Document | None:     # pragma: no cover - overridden
        return doc


class FileReader(_Step):
    """Reads this task's share (every world_size-th line) of the manifest of folder sources: size limit before
    reading, unreadable / binary / undecodable files skipped and counted; id = "<repo>/<path>"."""

    type = "📖 - READER"
    name = "zhcoder files"
    log_name = "read"

    def __init__(self, work: str, sources: list[Source], max_bytes: int | None):
        super().__init__(work)
        self.sources = [dataclasses.asdict(s) for s in sources]
        self.max_bytes = max_bytes

    def documents(self, data: DocumentsPipeline, rank: int, world_size: int) -> DocumentsPipeline:
        if data:
            yield from data
        with open(Path(self.work, "manifest.jsonl"), encoding="utf-8") as manifest:
            for number, line in enumerate(manifest):
                if number % world_size == rank:
                    with self.track_time():
                        doc = self.read(json.loads(line))
                    if doc is not None:
                        self.update_doc_stats(doc)
                        yield doc

    def read(self, entry: dict) -> Document | None:
        source = self.sources[entry["source"]]
        doc_id = f"{source['repo']}/{entry['path']}"
        self.stat_update("input_files")
        if self.max_bytes is not None and entry["size"] > self.max_bytes:
            self.drop(doc_id, "too_large", bytes=entry["size"])
            return None
        try:
            raw = Path(source["path"], entry["path"]).read_bytes()
        except OSError as error:
            self.drop(doc_id, "unreadable", error=error.strerror or type(error).__name__)
            return None
        if is_binary(raw):
            self.drop(doc_id, "binary")
            return None
        text = decode(raw)
        if text is None:
            self.drop(doc_id, "encoding_error")
            return None
        return Document(text=text, id=doc_id, metadata={"repo": source["repo"], "path": entry["path"]})


class RecordAdapter:
    """datatrove reader adapter for JSONL / Parquet records: text, path, repo and language from the configured (or
    the well-known) field names; id = "<file>:<row>"; a record's own id is kept as metadata "record_id"."""

    def __init__(self, fields: dict[str, str | None]):
        self.fields = fields

    def _get(self, data: dict, kind: str):
        names = (self.fields[kind],) if self.fields.get(kind) else RECORD_FIELDS[kind]
        for name in names:
            if data.get(name) is not None:
                return data[name]
        return None

    def __call__(self, reader, data: dict, path: str, id_in_file: int | str) -> dict:
        text = self._get(data, "text")
        file_name = os.path.basename(path)
        metadata = {"repo": str(self._get(data, "repo") or file_name),
                    "path": str(self._get(data, "path") or "")}
        language = self._get(data, "language")
        if language:
            metadata["language"] = str(language)
        if data.get("id") is not None:
            metadata["record_id"] = str(data["id"])
        return {"text": text if isinstance(text, str) else "", "id": f"{file_name}:{id_in_file}",
                "metadata": metadata}


def normalize_language(name: str) -> str:
    """A record's language field in zhcoder's canonical names ("python" -> "Python"), via pygments' aliases."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return canonical_language(get_lexer_by_name(name.strip().lower()).name)
    except ClassNotFound:
        return name.strip()


class LanguageId(_Step):
    """Sets metadata["language"]: a record's own language field, else the file name (pygments' table, shebang);
    drops binary text (a NUL in the first 8000 characters) and unknown languages."""

    name = "language id"
    log_name = "language"

    def process(self, doc: Document) -> Document | None:
        if "\0" in doc.text[:8000]:
            self.drop(doc.id, "binary")
            return None
        given = doc.metadata.get("language")
        path = doc.metadata.get("path") or ""
        language = normalize_language(given) if given else (
            detect_language(path, head=doc.text[:1024].encode("utf-8", "surrogatepass")) if path else None)
        if language is None:
            self.drop(doc.id, "unknown_language")
            return None
        doc.metadata["language"] = language
        self.stat_update(f"language/{language}")
        return doc


class CodeFilters(_Step):
    """zhcoder.data.filters.check with the build's FilterConfig, plus documents holding special-token strings
    (they would corrupt FIM and repo-level samples)."""

    name = "code filters"
    log_name = "filters"

    def __init__(self, work: str, config: dict):
        super().__init__(work)
        self.config = FilterConfig(**config)

    def process(self, doc: Document) -> Document | None:
        from zhcoder.data.transforms import has_special_tokens

        reason = check(doc.text, doc.metadata.get("path") or "", self.config, language=doc.metadata["language"])
        if reason is None and has_special_tokens(doc.text):
            reason = "special_tokens"
        if reason is not None:
            self.drop(doc.id, reason)
            return None
        return doc


class Redact(PipelineStep):
    """zhcoder.data.transforms.redact: secrets and personal data replaced by placeholders, counted per kind."""

    type = "🧑‍💻 - ZHCODER"
    name = "redact secrets"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from zhcoder.data.transforms import redact

        for doc in data or ():
            with self.track_time():
                doc.text, counts = redact(doc.text)
                if any(counts.values()):
                    self.stat_update("files_redacted")
                for kind, count in counts.items():
                    if count:
                        self.stat_update(f"redacted/{kind}", value=count)
            yield doc


class Decontaminate(_Step):
    """Drops documents sharing an n-gram with an evaluation problem (zhcoder.data.decontaminate); the index is
    built once, in the process that plans the build, and shipped with the step."""

    name = "decontaminate"
    log_name = "decontaminate"

    def __init__(self, work: str, n: int, tasks: tuple[str, ...] | None, data_dir: str | None):
        from zhcoder.data.decontaminate import DEFAULT_TASKS, Decontaminator
        from zhcoder.eval.tasks import DataUnavailable

        super().__init__(work)
        try:
            self.index = Decontaminator.from_tasks(tasks or DEFAULT_TASKS, data_dir=data_dir, n=n)
        except DataUnavailable as error:
            message = f"decontamination needs the evaluation sets: {error} (or --no-decontaminate)"
            raise DataUnavailable(message) from error

    def process(self, doc: Document) -> Document | None:
        source = self.index.match(doc.text)
        if source is not None:
            self.stat_update(f"decontaminated/{source.split('/', 1)[0]}")
            self.drop(doc.id, "decontaminated", match=source)
            return None
        return doc


class Signatures(PipelineStep):
    """Content hash and MinHash of each document to work/signatures/<rank>.{jsonl,bin} (written under a temporary
    name, renamed when the task ends), and metadata["bucket"] for the shuffle to stage 3: hash(repo) mod buckets
    for repo-level samples (a repository must reach one task whole), else hash(document id) mod buckets."""

    type = "🧑‍💻 - ZHCODER"
    name = "dedup signatures"

    def __init__(self, work: str, buckets: int, num_perm: int, shingle_size: int, enabled: bool = True,
                 by_repo: bool = False):
        super().__init__()
        self.work, self.buckets, self.enabled, self.by_repo = work, buckets, enabled, by_repo
        self.num_perm, self.shingle_size = num_perm, shingle_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from zhcoder.data.dedup import NearDedup, content_hash

        folder = Path(self.work, "signatures")
        folder.mkdir(parents=True, exist_ok=True)
        hasher = NearDedup(num_perm=self.num_perm, shingle_size=self.shingle_size)
        names = folder / f"{rank:05d}.jsonl", folder / f"{rank:05d}.bin"
        with open(str(names[0]) + ".tmp", "w", encoding="utf-8") as ids, open(str(names[1]) + ".tmp", "wb") as sigs:
            for doc in data or ():
                with self.track_time():
                    key = doc.metadata["repo"] if self.by_repo else doc.id
                    doc.metadata["bucket"] = f"{_stable_hash(key) % self.buckets:05d}"
                    if self.enabled:
                        minhash = hasher.minhash(doc.text)
                        ids.write(_jsonl([doc.id, content_hash(doc.text), minhash is not None]))
                        if minhash is not None:
                            minhash.hashvalues.astype(np.uint64).tofile(sigs)
                yield doc
        for name in names:
            os.replace(str(name) + ".tmp", name)


class DedupIndex(PipelineStep):
    """Stage 2 (one task): exact, then near-duplicate removal over every task's signatures, in task order; writes
    work/dedup/removed.jsonl ({"id", "reason", "duplicate_of", "jaccard"?}) atomically."""

    type = "🫂 - DEDUP"
    name = "exact + MinHash LSH"

    def __init__(self, work: str, tasks: int, threshold: float, num_perm: int, shingle_size: int,
                 enabled: bool = True):
        super().__init__()
        self.work, self.tasks, self.enabled = work, tasks, enabled
        self.threshold, self.num_perm, self.shingle_size = threshold, num_perm, shingle_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from zhcoder.data.dedup import NearDedup

        folder = Path(self.work, "dedup")
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / "removed.jsonl"
        near = NearDedup(threshold=self.threshold, num_perm=self.num_perm, shingle_size=self.shingle_size)
        first_of_hash: dict[bytes, str] = {}
        with self.track_time("task"), open(str(out) + ".tmp", "w", encoding="utf-8") as removed:
            for task in range(self.tasks if self.enabled else 0):
                ids_file = Path(self.work, "signatures", f"{task:05d}.jsonl")
                signatures = np.fromfile(ids_file.with_suffix(".bin"), dtype=np.uint64).reshape(-1, self.num_perm)
                row = 0
                with open(ids_file, encoding="utf-8") as lines:
                    for line in lines:
                        doc_id, digest, has_minhash = json.loads(line)
                        self.stat_update("documents")
                        minhash = None
                        if has_minhash:
                            minhash = near.minhash_from(signatures[row])
                            row += 1
                        key = bytes.fromhex(digest)
                        if key in first_of_hash:
                            self.stat_update("exact_duplicate")
                            removed.write(_jsonl({"id": doc_id, "reason": "exact_duplicate",
                                                  "duplicate_of": first_of_hash[key]}))
                            continue
                        first_of_hash[key] = doc_id
                        if minhash is None:
                            continue
                        hit = near.add_minhash(doc_id, minhash)
                        if hit is not None:
                            self.stat_update("near_duplicate")
                            removed.write(_jsonl({"id": doc_id, "reason": "near_duplicate", "duplicate_of": hit[0],
                                                  "jaccard": round(hit[1], 4)}))
        os.replace(str(out) + ".tmp", out)
        if data:
            yield from data


class _RepoBuffers:
    """Open repository chunks for repo-level samples: at most `limit` repositories open, each chunk at most
    `max_chars` characters of content (a single larger file is a chunk of its own); the least recently fed
    repository is closed first when a new one would exceed `limit`."""

    def __init__(self, max_chars: int, limit: int = REPO_BUFFERS):
        self.max_chars, self.limit = max_chars, limit
        self.open: OrderedDict[str, list] = OrderedDict()   # repo -> [chars, [(path, content, language), ...]]

    def add(self, repo: str, path: str, content: str, language: str) -> list[tuple[str, list]]:
        """Add one file; returns the chunks this closes as (repo, files)."""
        closed = []
        chunk = self.open.get(repo)
        if chunk is not None and chunk[0] + len(content) > self.max_chars:
            closed.append((repo, self.open.pop(repo)[1]))
            chunk = None
        if chunk is None:
            if len(self.open) >= self.limit:
                old_repo, old_chunk = self.open.popitem(last=False)
                closed.append((old_repo, old_chunk[1]))
            chunk = self.open[repo] = [0, []]
        self.open.move_to_end(repo)
        chunk[0] += len(content)
        chunk[1].append((path, content, language))
        return closed

    def close_all(self) -> list[tuple[str, list]]:
        closed = [(repo, chunk[1]) for repo, chunk in self.open.items()]
        self.open.clear()
        return closed


@functools.lru_cache(maxsize=2)
def load_tokenizer(name: str):
    """`qwen` or a tokenizer folder, loaded once per worker process."""
    from zhcoder.tokenizer import Tokenizer

    return Tokenizer.qwen() if name == "qwen" else Tokenizer.from_dir(name)


class Tokenize(PipelineStep):
    """Stage 3 (task r of T): reads work/clean/<r>/*.jsonl (bucket r, written by every stage-1 task), drops the
    documents stage 2 removed, builds samples (file-level with FIM, or repo-level) and writes token shards to
    work/tokens/<r>/{train,validation}; counts files, characters and tokens per language."""

    type = "🔢 - TOKENIZER"
    name = "FIM / repo samples -> token shards"

    def __init__(self, work: str, config: dict):
        super().__init__()
        self.work = work
        self.config = config

    def _removed_ids(self) -> set[str]:
        path = Path(self.work, "dedup", "removed.jsonl")
        if not path.exists():
            return set()
        with open(path, encoding="utf-8") as lines:
            return {json.loads(line)["id"] for line in lines}

    def _documents(self, rank: int) -> Iterable[Document]:
        from datatrove.pipeline.readers import JsonlReader

        folder = Path(self.work, "clean", f"{rank:05d}")
        if not folder.is_dir():
            return
        reader = JsonlReader(str(folder), glob_pattern="*.jsonl", add_file_path=False)
        yield from reader.run(None, 0, 1)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from zhcoder.data.transforms import fim_sample, repo_sample

        c = self.config
        tokenizer = load_tokenizer(c["tokenizer"])
        removed = self._removed_ids()
        out = Path(self.work, "tokens", f"{rank:05d}")
        writers = {split: ShardWriter(out, split, vocab_size=tokenizer.vocab_size, shard_tokens=c["shard_tokens"])
                   for split in SPLITS}

        def emit(key: str, text: str, languages: list[tuple[str, int]]) -> None:
            split = "validation" if _unit(c["seed"], "split", key) < c["validation_fraction"] else "train"
            ids = tokenizer.encode(text, special=True)
            writers[split].add(np.asarray(ids, dtype=np.int64))
            self.stat_update(f"{split}/samples")
            self.stat_update(f"{split}/tokens", value=len(ids))
            total_chars = sum(chars for _, chars in languages) or 1
            for language, chars in languages:     # a repo-level sample's tokens are shared by character count
                self.stat_update(f"tokens/{language}", value=round(len(ids) * chars / total_chars))

        def emit_repo(repo: str, files: list) -> None:
            text = repo_sample(repo, [(path, content) for path, content, _ in files])
            emit(f"{repo}/{files[0][0]}", text, [(language, len(content)) for _, content, language in files])

        buffers = _RepoBuffers(c["repo_max_chars"])
        try:
            for doc in self._documents(rank):
                if doc.id in removed:
                    continue
                with self.track_time():
                    language = doc.metadata["language"]
                    self.stat_update(f"files/{language}")
                    self.stat_update(f"chars/{language}", value=len(doc.text))
                    if c["repo_level"]:
                        for repo, files in buffers.add(doc.metadata["repo"], doc.metadata["path"] or doc.id,
                                                       doc.text, language):
                            emit_repo(repo, files)
                    else:
                        rng = np.random.default_rng(_stable_hash(c["seed"], "fim", doc.id))
                        emit(doc.id, fim_sample(doc.text, rng, rate=c["fim_rate"], spm_rate=c["spm_rate"]),
                             [(language, len(doc.text))])
            for repo, files in buffers.close_all():
                emit_repo(repo, files)
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        if data:
            yield from data


class Merge(PipelineStep):
    """Stage 4 (one task): every task's shards hard-linked (copied where links fail) in task order into OUT/<split>,
    index.json written last; OUT/removed.jsonl and OUT/stats.json."""

    type = "🧑‍💻 - ZHCODER"
    name = "merge shards + stats"

    def __init__(self, work: str, out: str, tasks: int, config: dict):
        super().__init__()
        self.work, self.out, self.tasks = work, out, tasks
        self.config = config

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        totals = {split: merge_split(Path(self.work, "tokens"), self.tasks, Path(self.out), split) for split in SPLITS}
        removed = _merge_removed(Path(self.work), Path(self.out, "removed.jsonl"))
        stats = build_stats(Path(self.work), self.config, totals, removed)
        write_json_atomic(Path(self.out, "stats.json"), stats)
        self.stat_update("tokens", value=sum(t["n_tokens"] for t in totals.values()))
        if data:
            yield from data


def merge_split(tokens_dir: Path, tasks: int, out: Path, split: str) -> dict:
    """Link the shards of `split` from every task into out/<split> and write its index.json (complete)."""
    target = out / split
    target.mkdir(parents=True, exist_ok=True)
    (target / INDEX_NAME).unlink(missing_ok=True)
    for stale in target.glob("*-[0-9][0-9][0-9][0-9][0-9].bin"):
        stale.unlink()
    shards, vocab_size, dtype = [], None, None
    for task in range(tasks):
        index = read_index(tokens_dir / f"{task:05d}" / split)
        if not index["complete"]:
            raise ValueError(f"task {task}'s {split} shards are incomplete; rerun the build")
        vocab_size, dtype = index["vocab_size"], index["dtype"]
        for shard in index["shards"]:
            number = len(shards)
            renamed = {"tokens": f"tokens-{number:05d}.bin", "docs": f"docs-{number:05d}.bin", "mask": None}
            for kind in ("tokens", "docs"):
                source = tokens_dir / f"{task:05d}" / split / shard[kind]
                try:
                    os.link(source, target / renamed[kind])
                except OSError:
                    shutil.copyfile(source, target / renamed[kind])
            shards.append({**shard, **renamed})
    if vocab_size is None:
        raise ValueError("no task wrote any shards")
    index = {"format": FORMAT, "version": VERSION, "split": split, "complete": True, "vocab_size": vocab_size,
             "dtype": dtype or token_dtype(vocab_size).name, "with_mask": False,
             "shard_tokens": max((s["n_tokens"] for s in shards), default=0),
             "n_tokens": sum(s["n_tokens"] for s in shards), "n_documents": sum(s["n_documents"] for s in shards),
             "shards": shards}
    write_json_atomic(target / INDEX_NAME, index)
    return {"n_tokens": index["n_tokens"], "n_documents": index["n_documents"], "shards": len(shards)}


def _merge_removed(work: Path, out: Path) -> Counter:
    """Concatenate every removal log (stage 1 steps, then stage 2) into `out`; returns the count per reason."""
    reasons = Counter()
    logs = sorted((work / "removed").glob("*.jsonl")) + [work / "dedup" / "removed.jsonl"]
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as merged:
        for log in logs:
            if not log.exists():
                continue
            with open(log, encoding="utf-8") as lines:
                for line in lines:
                    reasons[json.loads(line)["reason"]] += 1
                    merged.write(line)
    os.replace(tmp, out)
    return reasons


def _stage_stats(work: Path, stage: str) -> list[dict]:
    """The datatrove per-step stats of a stage, summed over its tasks."""
    from datatrove.utils.stats import PipelineStats

    files = sorted((work / "logs" / stage / "stats").glob("*.json"))
    merged = sum((PipelineStats.from_json(json.loads(f.read_text(encoding="utf-8"))) for f in files),
                 start=PipelineStats())
    return [step.to_dict() for step in merged.stats]


def _metric_totals(stage_stats: list[dict]) -> Counter:
    """name -> total of every counter in a stage's steps (datatrove stores {"total": ...} per metric)."""
    totals = Counter()
    for step in stage_stats:
        for name, value in step.get("stats", {}).items():
            if isinstance(value, dict) and "total" in value:
                totals[name] += value["total"]
            elif isinstance(value, (int, float)):
                totals[name] += value
    return totals


def build_stats(work: Path, config: dict, totals: dict, removed: Counter) -> dict:
    """OUT/stats.json: the summary a user reads, plus the raw datatrove stats of every stage."""
    stages = {stage: _stage_stats(work, stage) for stage in STAGES[:3]}
    clean, tokenize = _metric_totals(stages["clean"]), _metric_totals(stages["tokenize"])
    dedup = _metric_totals(stages["dedup"])
    languages: dict[str, dict] = defaultdict(lambda: {"files": 0, "chars": 0, "tokens": 0})
    for name, value in tokenize.items():
        kind, _, language = name.partition("/")
        if kind in ("files", "chars", "tokens") and language:
            languages[language][kind] += int(value)
    kept = sum(v["files"] for v in languages.values())
    manifest = json.loads((work / "plan.json").read_text(encoding="utf-8"))
    return {
        "sources": config["sources"], "tokenizer": config["tokenizer"], "tasks": manifest["tasks"],
        "input_files": manifest["files"], "input_bytes": manifest["bytes"],
        "documents_read": int(clean.get("documents", 0) + clean.get("input_files", 0) - manifest["record_files"]),
        "kept_files": kept,
        "removed": dict(sorted(removed.items(), key=lambda kv: (-kv[1], kv[0]))),
        "decontaminated": {name.split("/", 1)[1]: int(v) for name, v in sorted(clean.items())
                           if name.startswith("decontaminated/")},
        "redacted": {name.split("/", 1)[1]: int(v) for name, v in sorted(clean.items()) if name.startswith("redacted/")},
        "files_redacted": int(clean.get("files_redacted", 0)),
        "dedup_rate": round((dedup.get("exact_duplicate", 0) + dedup.get("near_duplicate", 0))
                            / max(dedup.get("documents", 0), 1), 6),
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1]["tokens"], kv[0]))),
        "splits": totals,
        "samples": {split: int(tokenize.get(f"{split}/samples", 0)) for split in SPLITS},
        "config": config,
        "datatrove": stages,
    }
