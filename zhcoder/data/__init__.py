"""Training data: turning sources into token shards the trainer reads.

Modules:
    shards.py   on-disk token shards (raw .bin memmaps + index.json): `ShardWriter`, `read_index`,
                `TokenDataset` (random access to documents), `PackedSequences` (seeded, resumable
                fixed-length packing with per-document position ids and loss masks)
    sft.py      SFT data: chat JSONL (OpenAI messages, Alpaca, ShareGPT) -> chat template -> masked shards
    filters.py  language id by file name (pygments' lexer table), binary / encoding checks, StarCoder-style
                code filters (line lengths, alphanumeric fraction, auto-generated, minified, size)
    transforms.py  secrets and personal-data redaction; FIM (PSM / SPM) and repo-level samples
    dedup.py    exact (normalised sha256) and near-duplicate (MinHash LSH through datasketch) removal
    decontaminate.py  13-word n-gram overlap with every evaluation set's prompts and solutions
    (later)     build: `zhcoder data build` on datatrove, the steps above as pipeline steps, stats.json

    pytest -q tests/test_shards.py
"""
