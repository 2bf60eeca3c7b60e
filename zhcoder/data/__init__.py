"""Training data: turning sources into token shards the trainer reads.

Modules:
    shards.py   on-disk token shards (raw .bin memmaps + index.json): `ShardWriter`, `read_index`,
                `TokenDataset` (random access to documents), `PackedSequences` (seeded, resumable
                fixed-length packing with per-document position ids and loss masks)
    sft.py      SFT data: chat JSONL (OpenAI messages, Alpaca, ShareGPT) -> chat template -> masked shards
    (later)     build / filters: corpus building on datatrove (language id, filters, dedup, secrets,
                decontamination, FIM, repo-level samples)

    pytest -q tests/test_shards.py
"""
