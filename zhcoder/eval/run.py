"""`zhcoder eval TASK`: generate (or read) samples, run them in the sandbox, score, write the output folder.

The output folder holds `run.json` (what was asked), `samples.jsonl` (generations of a model or endpoint,
appended as they arrive), `results.jsonl` (one verdict row per sample, appended as verdicts arrive) and
`summary.json`. Running the same command again resumes: finished generations and verdicts are kept.

    zhcoder eval humaneval --samples ../shared/data/samples/qwen2.5-coder-1.5b-base/humaneval-generated.jsonl \
        --out runs/qwen-1.5b-he --json
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from .sandbox import Executor, Limits
from .scoring import RowFile, summarize
from .subjects import GenerationSettings, Sample, read_samples
from .tasks import load_task


class RunError(ValueError):
    """A run that cannot go on as asked (the message says why and what to do)."""


def _check_run_file(out: Path, request: dict) -> None:
    path = out / "run.json"
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != request:
            changed = sorted(k for k in set(previous) | set(request) if previous.get(k) != request.get(k))
            raise RunError(f"{out} holds a run with other settings ({', '.join(changed)}): use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")


def _generated(out: Path, problems: list, subject, n: int, progress) -> list[Sample]:
    """Samples of a model or endpoint: those already in samples.jsonl, plus the missing ones, generated now."""
    store = RowFile(out / "samples.jsonl")
    work = [(p, i) for p in problems for i in range(n) if not store.done(p.task_id, i)]
    if work:
        bar = progress.add_task(f"generating ({subject.name})", total=len(work))
        try:
            for sample in subject.generate(work):
                store.add(sample.to_json())
                progress.advance(bar)
        finally:
            store.close()
    have = {key: Sample(**row) for key, row in store.rows.items()}
    return [have[(p.task_id, i)] for p in problems for i in range(n)]


def evaluate(task_name: str, out: str | Path, *, samples: str | None = None, subject=None,
             settings: GenerationSettings | None = None, workers: int | None = None,
             timeout_s: float | None = None, limit: int | None = None, data_dir: str | None = None,
             name: str | None = None, show_progress: bool = True) -> dict:
    """Score one subject on one task; returns the summary (also written to OUT/summary.json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    task = load_task(task_name, data_dir)
    problems = task.problems[:limit] if limit else task.problems
    settings = settings or GenerationSettings()
    limits = Limits(timeout_s=timeout_s or task.timeout_s, memory_mb=task.memory_mb)
    out = Path(out)
    source = {"samples": str(Path(samples).resolve())} if samples else {"subject": getattr(subject, "name", None)}
    request = {"task": task.name, **source, "limit": limit, "limits": limits.to_dict(),
               **({} if samples else {"generation": asdict(settings)})}
    by_id = {p.task_id: p for p in problems}
    # validate a samples file before anything is written
    if samples and task.metric == "translation" and not str(samples).endswith((".jsonl", ".json")):
        sample_list = _line_samples(samples, problems, limit)          # CodeXGLUE's one-line-per-example files
    else:
        sample_list = read_samples(samples, list(by_id)) if samples else None
    detector = None
    if task.metric == "security":                 # before any generation: never report 0% from a broken detector
        from .security import Detector

        detector = Detector()
        detector.self_check()
    _check_run_file(out, request)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        if sample_list is None:
            if subject is None:
                raise RunError("no subject: give --samples FILE, --model DIR or --endpoint URL")
            sample_list = _generated(out, problems, subject, settings.n, progress)
        if task.metric == "translation":
            summary = _translation_summary(task, problems, sample_list, out)
            return _finish(summary, out, request, samples, subject, name, limits, task, settings, sample_list)
        if task.metric == "security":
            summary = _security_summary(task, problems, sample_list, out, detector, progress)
            return _finish(summary, out, request, samples, subject, name, limits, task, settings, sample_list)
        results = RowFile(out / "results.jsonl")
        todo = [s for s in sample_list if not results.done(s.task_id, s.completion_id)]
        bar = _bar(progress, f"executing {task.name}", todo, out)
        programs = [by_id[s.task_id].program(completion=s.completion, solution=s.solution, stage=stage)
                    for s in todo for stage in task.stages]
        try:
            with Executor(workers=workers, limits=limits) as executor:
                outcomes = executor.map(programs)
                for sample in todo:
                    verdicts = {stage: next(outcomes).verdict for stage in task.stages}
                    headline = verdicts[task.stages[-1]]
                    row = {"task_id": sample.task_id, "completion_id": sample.completion_id,
                           "passed": headline == "passed", "result": headline}
                    if len(task.stages) > 1:
                        row["stages"] = verdicts
                    results.add(row)
                    progress.advance(bar)
        finally:
            results.close()
    rows = [results.rows[(s.task_id, s.completion_id)] for s in sample_list]
    difficulties = {p.task_id: p.difficulty for p in problems}
    summary = {"task": task.name, **summarize(rows, list(by_id), difficulties, task.stages)}
    return _finish(summary, out, request, samples, subject, name, limits, task, settings, sample_list)


def _bar(progress, description: str, todo: list, out: Path):
    """A progress bar over `todo`; none when a resumed run has nothing left (a 0/0 bar says nothing)."""
    if not todo:
        if not progress.disable:
            progress.console.print(f"{out}: every sample is already scored (the summary is rewritten)")
        return None
    return progress.add_task(description, total=len(todo))


def _line_samples(path, problems: list, limit: int | None) -> list[Sample]:
    """A translation output file: line i is the prediction for problem i (as CodeXGLUE's .output files)."""
    from .translation import TranslationError, read_lines

    try:
        lines = read_lines(path)
    except TranslationError as error:
        raise RunError(str(error)) from None
    if len(lines) != len(problems) and not (limit and len(lines) >= len(problems)):
        raise RunError(f"{path} has {len(lines)} lines for {len(problems)} examples: a translation output file "
                       "holds one line per example, in order")
    return [Sample(p.task_id, 0, solution=line) for p, line in zip(problems, lines)]


def _translation_summary(task, problems: list, sample_list: list[Sample], out: Path) -> dict:
    """CodeXGLUE's BLEU and exact match and CodeBLEU of the first sample of every problem."""
    from .translation import TranslationError, bleu, codebleu_score, exact_match

    first = {s.task_id: s for s in sample_list if s.completion_id == 0}
    hypotheses = [" ".join((first[p.task_id].solution if first[p.task_id].solution is not None
                            else first[p.task_id].completion).split("\n")).strip() for p in problems]
    references = [p.reference for p in problems]
    with open(out / "results.jsonl", "w", encoding="utf-8") as rows:
        for problem, hypothesis in zip(problems, hypotheses):
            same = hypothesis.strip() == problem.reference.strip()
            rows.write(json.dumps({"task_id": problem.task_id, "completion_id": 0, "passed": same,
                                   "result": "exact" if same else "different"}) + "\n")
    summary = {"task": task.name, "metric": "translation", "n_problems": len(problems),
               "bleu": bleu(references, hypotheses), "exact_match": exact_match(references, hypotheses)}
    try:
        scores = codebleu_score(references, hypotheses, task.target_language)
        summary["codebleu"] = scores.pop("codebleu")
        summary["codebleu_components"] = scores
    except TranslationError as error:
        summary["codebleu"], summary["codebleu_error"] = None, str(error)
    return summary


def _security_summary(task, problems: list, sample_list: list[Sample], out: Path, detector, progress) -> dict:
    """Scan every sample's code with the detector (resumable: verdicts already in results.jsonl are kept)."""
    from .security import summarize_audit

    results = RowFile(out / "results.jsonl")
    todo = [s for s in sample_list if not results.done(s.task_id, s.completion_id)]
    bar = _bar(progress, f"scanning {task.name}", todo, out)
    try:
        for start in range(0, len(todo), 16):
            batch = todo[start:start + 16]
            found = detector.scan([s.solution if s.solution is not None else s.completion for s in batch])
            for sample, issues in zip(batch, found):
                results.add({"task_id": sample.task_id, "completion_id": sample.completion_id,
                             "passed": not issues, "vulnerable": bool(issues), "issues": issues})
            progress.advance(bar, len(batch))
    finally:
        results.close()
    rows = [results.rows[(s.task_id, s.completion_id)] for s in sample_list]
    categories = {p.task_id: p.category for p in problems}
    return {"task": task.name, **summarize_audit(rows, categories), "detector": detector.version}


def _finish(summary: dict, out: Path, request: dict, samples, subject, name, limits, task, settings,
            sample_list) -> dict:
    earlier = out / "summary.json"               # a rerun without --name keeps the name the run was given
    if name is None and earlier.is_file():
        name = json.loads(earlier.read_text(encoding="utf-8")).get("name")
    summary.update({
        "subject": request.get("samples") or request.get("subject"),
        "name": name or (Path(samples).name if samples else subject.label),
        "limits": limits.to_dict(),
        "source": task.source,
        "zhcoder": __version__,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    if sample_list and not samples:
        summary["generation"] = asdict(settings)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
