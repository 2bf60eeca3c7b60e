"""The settings of `zhcoder data build`, declared once: `BuildConfig` (what the output depends on, saved as
OUT/work/config.json) and `RunConfig` (how the build runs: executor and resources). The command line generates
its options from these fields and from zhcoder.data.filters.FilterConfig (zhcoder.cli.settings). Light on purpose
(no datatrove): the command line imports it to build its options.

    zhcoder data build --help                      # every field, its help and its default
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zhcoder.config import setting

from zhcoder.data.filters import FilterConfig


@dataclass
class BuildConfig:
    """Everything a build's output depends on; saved as OUT/work/config.json (a rerun must match it)."""

    sources: list[str] = setting(help="folders, .jsonl or .parquet files", cli=False)   # the command's arguments
    tokenizer: str = setting(help="a folder with tokenizer.json, or 'qwen'")
    out: str = setting(help="output folder: train/, validation/, stats.json, removed.jsonl")
    tasks: int = setting(0, "tasks per stage (0: 8, or one per 128 MiB of input)")
    filters: dict = setting(factory=lambda: dataclasses.asdict(FilterConfig()), cli=False)   # FilterConfig's fields
    redact: bool = setting(True, "replace secrets and personal data")
    decontaminate: bool = setting(True, "drop files sharing an n-gram with an evaluation set")
    decontaminate_n: int = setting(13, "n-gram length in words")
    decontaminate_tasks: tuple[str, ...] | None = setting(None, "comma-separated eval sets", default_text="all")
    data_dir: str | None = setting(None, "where the eval sets are", default_text="$ZHCODER_DATA, else "
                                    "../shared/data next to the checkout")
    dedup: bool = setting(True, "exact + near-duplicate removal")
    near_threshold: float = setting(0.85, "MinHash Jaccard threshold")
    shingle_size: int = setting(5, "tokens per shingle")
    num_perm: int = setting(128, "MinHash permutations")
    fim_rate: float = setting(0.5, "fraction of files turned into FIM samples")
    spm_rate: float = setting(0.5, "fraction of FIM samples in SPM order (else PSM)")
    repo_level: bool = setting(False, "repo-level samples instead of file-level FIM")
    repo_max_chars: int = setting(131_072, "most characters per repo-level sample")
    validation_fraction: float = setting(0.005, "fraction of documents held out for the validation split")
    seed: int = setting(0, "seed of FIM and of the split")
    shard_tokens: int = setting(2**26, "tokens per shard file")
    text_field: str | None = setting(None, "records: text field", default_text="text or content")
    path_field: str | None = setting(None, "records: file path field")
    repo_field: str | None = setting(None, "records: repository name field")
    language_field: str | None = setting(None, "records: language field")

    def check(self) -> None:
        if not self.sources:
            raise ValueError("give at least one SRC (a folder, a .jsonl or a .parquet file)")
        for name in ("fim_rate", "spm_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"--validation-fraction must lie in [0, 1), got {self.validation_fraction}")
        if not 0.0 < self.near_threshold <= 1.0:
            raise ValueError(f"--near-threshold must lie in (0, 1], got {self.near_threshold}")
        if self.shingle_size < 1 or self.num_perm < 16 or self.decontaminate_n < 1:
            raise ValueError("--shingle-size and --decontaminate-n must be >= 1, --num-perm >= 16")
        if self.tasks < 0 or self.repo_max_chars < 1 or self.shard_tokens < 1:
            raise ValueError("--tasks must be >= 0, --repo-max-chars and --shard-tokens >= 1")
        FilterConfig(**self.filters)       # unknown filter names raise TypeError early
        if self.decontaminate_tasks is not None:
            self.decontaminate_tasks = tuple(self.decontaminate_tasks)


@dataclass
class RunConfig:
    """How a build runs; not part of its output (any executor and number of workers resume it)."""

    executor: str = setting("local", "local, slurm or ray")
    workers: int | None = setting(None, "local worker processes", default_text="all cores")
    partition: str | None = setting(None, "Slurm partition (--executor slurm)")
    time_limit: str = setting("04:00:00", "Slurm time limit per task", flag="--time")
    env_command: str | None = setting(None, "Slurm: shell command that activates the environment")
    cpus_per_task: int = setting(1, "Slurm / Ray CPUs per task")
    mem_per_cpu_gb: float = setting(4.0, "Slurm / Ray memory per CPU")
    restart: bool = setting(False, "discard an earlier (partial) build in --out")

    def executor_options(self) -> dict:
        """The Slurm or Ray executor's arguments."""
        if self.executor not in ("local", "slurm", "ray"):
            raise ValueError(f"--executor must be local, slurm or ray, got {self.executor!r}")
        if self.executor == "slurm":
            if not self.partition:
                raise ValueError("--executor slurm needs --partition")
            return {"partition": self.partition, "time": self.time_limit, "cpus_per_task": self.cpus_per_task,
                    "mem_per_cpu_gb": self.mem_per_cpu_gb, "env_command": self.env_command}
        if self.executor == "ray":
            return {"cpus_per_task": self.cpus_per_task, "mem_per_cpu_gb": self.mem_per_cpu_gb}
        return {}
