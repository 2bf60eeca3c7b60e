"""Training data: turning sources into token shards the trainer reads.

Modules:
    shards.py   on-disk token shards (raw .bin memmaps + index.json): `ShardWriter`, `read_index`,
                `TokenDataset` (random access to documents), `PackedSequences` (seeded, resumable
                fixed-length packing with per-document position ids and loss masks)
    sft.py      SFT data: chat JSONL (OpenAI messages, Alpaca, ShareGPT) -> chat template -> masked shards;
                prompt-completion JSONL -> plain text + <|endoftext|>, loss on the completion
    filters.py  language id by file name (pygments' lexer table), binary / encoding checks, StarCoder-style
                code filters (line lengths, alphanumeric fraction, auto-generated, minified, size)
    transforms.py  secrets and personal-data redaction; FIM (PSM / SPM) and repo-level samples
    dedup.py    exact (normalised sha256) and near-duplicate (MinHash LSH through datasketch) removal
    decontaminate.py  13-word n-gram overlap with every evaluation set's prompts and solutions
    config.py   the settings of `data build` (BuildConfig, RunConfig), declared once: the CLI's options come from them
    build.py    `zhcoder data build`: plans the inputs, runs four datatrove stages (clean, dedup, tokenize, merge)
                on the local, Slurm or Ray executor, writes shards, stats.json and removed.jsonl (docs/data.md)
    steps.py    the datatrove pipeline steps of the build (readers, language id, filters, redaction,
                decontamination, dedup signatures and index, FIM / repo-level tokenisation, merge)

    pytest -q tests/test_shards.py tests/test_data_build.py
"""
