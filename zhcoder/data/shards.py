"""Token shards on disk: a writer, a random-access reader, and a packer of fixed-length training sequences.

On-disk format of one split (`DIR/<split>/`, e.g. `out/train/`, `out/validation/`), no pickle anywhere:

    tokens-00000.bin   raw little-endian token ids, uint16 when vocab_size <= 65536 else uint32
    docs-00000.bin     raw int64: the start offset of each document inside tokens-00000.bin (one per document;
                       a document ends where the next starts, the last one at the shard's n_tokens)
    mask-00000.bin     optional raw uint8, one per token: 1 = this token is a training target (the loss
                       counts predicting it), 0 = context only (SFT: system/user turns)
    index.json         the only entry point; rewritten atomically (temp file + os.replace) after every
                       completed shard and at close:
        {"format": "zhcoder-token-shards", "version": 1, "split": "train", "complete": true,
         "vocab_size": 151936, "dtype": "uint32", "with_mask": false, "shard_tokens": 67108864,
         "n_tokens": ..., "n_documents": ...,
         "shards": [{"tokens": "tokens-00000.bin", "docs": "docs-00000.bin", "mask": null,
                     "n_tokens": ..., "n_documents": ...}, ...]}

Each shard file is written as `<name>.tmp`, flushed, fsync'ed and renamed when the shard is complete, and
only then listed in index.json; `complete` turns true at `close()`. A reader opens only what index.json
lists, so a leftover `.tmp` file or a directory without an index is never read as data, and an
interrupted build shows `"complete": false` (TokenDataset refuses it unless `allow_incomplete=True`).
A document never spans two shards (a document longer than `shard_tokens` gets a shard of its own).

Reading is memory-bounded: token and mask files are `np.memmap`s; only the per-document offsets
(8 bytes per document) and, for packing, one permutation of document indices are held in memory.

Packing convention (`PackedSequences`), per item, all arrays int64 of length seq_len except cu_seqlens:
    input_ids[t]     the token at position t
    labels[t]        the target for input_ids[t], ALREADY SHIFTED (do not shift again): the document's next
                     token, or -100 where there is none in this document, where that next token is masked
                     out (mask 0), or at padding
    position_ids[t]  0, 1, 2, ... restarting at each segment start
    cu_seqlens       int32 offsets of segment starts plus the end, [0, ..., seq_len] (variable length; the
                     padding tail, if any, is its own last segment)
A segment is a whole document, or one seq_len-long piece of a document longer than seq_len. Segments are
placed whole, in a seeded shuffled document order, into the current sequence; when the next segment does
not fit, the sequence is padded with pad_id and emitted. The last token of a piece that continues in the
next sequence is labelled with the document's next token, so every token of a document except its first
is a target exactly once per epoch (if its mask allows).

    python -m zhcoder.data.shards DIR/train        # prints the index summary of a split
    pytest -q tests/test_shards.py
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

FORMAT = "zhcoder-token-shards"
VERSION = 1
INDEX_NAME = "index.json"
IGNORE_INDEX = -100
_SHARD_FILE = re.compile(r"^(tokens|docs|mask)-\d{5}\.bin(\.tmp)?$")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as JSON through a temporary file, fsync'ed, then renamed over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Writes one split of a token dataset: DIR/<split>/tokens-00000.bin (uint16 if vocab_size <= 65536 else
    uint32), docs-00000.bin (int64 document start offsets within the shard), optional mask-00000.bin (uint8 loss
    mask, for SFT: 1 = the token is a training target), and DIR/<split>/index.json written last, atomically
    (temp file + os.replace) listing only complete shards with their token/doc counts, dtype, vocab_size, and
    whether masks exist. Shard files are written under a temporary name and renamed when complete; a reader
    ignores anything not in index.json.

    The writer owns its split directory: on start it removes a previous index.json and shard files there.
    Use as a context manager; on an exception the partial shard is deleted and the index stays incomplete.
    """

    def __init__(self, out_dir, split: str = "train", vocab_size: int | None = None,
                 shard_tokens: int = 2**26, with_mask: bool = False):
        if vocab_size is None or int(vocab_size) <= 0:
            raise ValueError("ShardWriter needs vocab_size (a positive int)")
        if shard_tokens <= 0:
            raise ValueError("shard_tokens must be positive")
        self.vocab_size = int(vocab_size)
        self.dtype = token_dtype(self.vocab_size)
        self.shard_tokens = int(shard_tokens)
        self.with_mask = bool(with_mask)
        self.split = split
        self.dir = Path(out_dir) / split
        self.dir.mkdir(parents=True, exist_ok=True)
        # Index first, so no reader ever pairs an old index with new files.
        (self.dir / INDEX_NAME).unlink(missing_ok=True)
        for p in self.dir.iterdir():
            if _SHARD_FILE.match(p.name) or p.name == INDEX_NAME + ".tmp":
                p.unlink()
        self.shards: list[dict] = []
        self.n_tokens = 0
        self.n_documents = 0
        self._closed = False
        self._files: dict[str, object] = {}
        self._shard_token_count = 0
        self._doc_starts: list[int] = []
        self._write_index(complete=False)

    # -- one shard at a time ---------------------------------------------------------------------------
    def _names(self, number: int) -> dict[str, str]:
        names = {"tokens": f"tokens-{number:05d}.bin", "docs": f"docs-{number:05d}.bin"}
        if self.with_mask:
            names["mask"] = f"mask-{number:05d}.bin"
        return names

    def _open_shard(self) -> None:
        names = self._names(len(self.shards))
        self._files = {kind: open(self.dir / (name + ".tmp"), "wb") for kind, name in names.items()
                       if kind != "docs"}

    def _finish_shard(self) -> None:
        if not self._doc_starts:
            return
        names = self._names(len(self.shards))
        self._files["docs"] = open(self.dir / (names["docs"] + ".tmp"), "wb")
        np.asarray(self._doc_starts, dtype=np.int64).tofile(self._files["docs"])
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._files = {}
        for name in names.values():
            os.replace(self.dir / (name + ".tmp"), self.dir / name)
        self.shards.append({"tokens": names["tokens"], "docs": names["docs"], "mask": names.get("mask"),
                            "n_tokens": self._shard_token_count, "n_documents": len(self._doc_starts)})
        self._doc_starts = []
        self._shard_token_count = 0
        self._write_index(complete=False)

    def _index(self, complete: bool) -> dict:
        return {"format": FORMAT, "version": VERSION, "split": self.split, "complete": complete,
                "vocab_size": self.vocab_size, "dtype": self.dtype.name, "with_mask": self.with_mask,
                "shard_tokens": self.shard_tokens, "n_tokens": self.n_tokens, "n_documents": self.n_documents,
                "shards": list(self.shards)}

    def _write_index(self, complete: bool) -> dict:
        index = self._index(complete)
        write_json_atomic(self.dir / INDEX_NAME, index)
        return index

    # -- public ----------------------------------------------------------------------------------------
    def add(self, tokens: Sequence[int] | np.ndarray, mask: Sequence[int] | np.ndarray | None = None) -> None:
        """Append one document. `mask` (same length, 1 = train on this token) only when with_mask=True;
        omitted there, every token is a target. Empty documents are kept (they count as documents)."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        array = np.asarray(tokens)
        if array.ndim != 1:
            raise ValueError(f"a document is a 1-D sequence of token ids, got shape {array.shape}")
        if array.size:
            if array.dtype.kind not in "iu":
                raise ValueError(f"token ids must be integers, got {array.dtype}")
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(f"token id out of range [0, {self.vocab_size}): min {low}, max {high}")
        if mask is not None and not self.with_mask:
            raise ValueError("a mask was given but the writer was created with with_mask=False")
        if self.with_mask:
            if mask is None:
                mask_array = np.ones(array.size, dtype=np.uint8)
            else:
                mask_array = np.asarray(mask)
                if mask_array.shape != array.shape:
                    raise ValueError(f"mask shape {mask_array.shape} != tokens shape {array.shape}")
                mask_array = (mask_array != 0).astype(np.uint8)
        if self._doc_starts and self._shard_token_count + array.size > self.shard_tokens:
            self._finish_shard()
        if not self._files:
            self._open_shard()
        self._doc_starts.append(self._shard_token_count)
        array.astype(self.dtype, copy=False).tofile(self._files["tokens"])
        if self.with_mask:
            mask_array.tofile(self._files["mask"])
        self._shard_token_count += array.size
        self.n_tokens += array.size
        self.n_documents += 1
        if self._shard_token_count >= self.shard_tokens:
            self._finish_shard()

    def close(self) -> dict:
        """Flush the last shard and write the final index.json ("complete": true); returns the index."""
        if self._closed:
            return self._index(complete=True)
        self._finish_shard()
        self._closed = True
        return self._write_index(complete=True)

    def abort(self) -> None:
        """Drop the shard in progress; the index keeps listing the completed shards, "complete": false."""
        for f in self._files.values():
            f.close()
        self._files = {}
        for p in self.dir.glob("*.bin.tmp"):
            p.unlink()
        self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_index(split_dir) -> dict:
    """The parsed index.json of a split directory; FileNotFoundError with a clear message if there is none."""
    path = Path(split_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {INDEX_NAME} in {split_dir}: not a token split (or its build never wrote one)")
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} index")
    if index.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported version {index.get('version')} (this reader knows {VERSION})")
    return index


class TokenDataset:
    """Random access to the documents of one split: len() = number of documents, ds[i] -> (tokens, mask or None)
    as read-only views into memory maps. `n_tokens`, `n_documents`, `vocab_size`, `has_mask`, `lengths` (int64
    per document). Refuses an index whose build did not finish unless allow_incomplete=True."""

    def __init__(self, split_dir, allow_incomplete: bool = False):
        self.dir = Path(split_dir)
        self.index = read_index(self.dir)
        if not self.index["complete"] and not allow_incomplete:
            raise ValueError(f"{self.dir}: the build that wrote this split did not finish (index.json "
                             f"\"complete\": false); rebuild it, or pass allow_incomplete=True")
        self.vocab_size = int(self.index["vocab_size"])
        self.dtype = np.dtype(self.index["dtype"])
        self.has_mask = bool(self.index["with_mask"])
        self.shards = self.index["shards"]
        self.n_tokens = sum(int(s["n_tokens"]) for s in self.shards)
        self.n_documents = sum(int(s["n_documents"]) for s in self.shards)
        starts, lengths, first_doc = [], [], [0]
        for shard in self.shards:
            doc_starts = np.fromfile(self.dir / shard["docs"], dtype=np.int64)
            if doc_starts.size != shard["n_documents"]:
                raise ValueError(f"{self.dir / shard['docs']}: {doc_starts.size} offsets, index says "
                                 f"{shard['n_documents']}")
            starts.append(doc_starts)
            lengths.append(np.diff(doc_starts, append=np.int64(shard["n_tokens"])))
            first_doc.append(first_doc[-1] + doc_starts.size)
        self._starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self._shard_of_doc = np.repeat(np.arange(len(self.shards)), np.diff(first_doc)) if self.shards else \
            np.zeros(0, np.int64)
        self._maps: dict[tuple[int, str], np.ndarray] = {}

    def _map(self, shard: int, kind: str) -> np.ndarray:
        key = (shard, kind)
        if key not in self._maps:
            info = self.shards[shard]
            dtype = self.dtype if kind == "tokens" else np.dtype(np.uint8)
            path = self.dir / info[kind]
            expected = int(info["n_tokens"]) * dtype.itemsize
            if path.stat().st_size != expected:
                raise ValueError(f"{path}: {path.stat().st_size} bytes, index says {expected}")
            if info["n_tokens"] == 0:
                self._maps[key] = np.zeros(0, dtype)
            else:
                self._maps[key] = np.memmap(path, dtype=dtype, mode="r", shape=(int(info["n_tokens"]),))
        return self._maps[key]

    def __len__(self) -> int:
        return self.n_documents

    def slice(self, i: int, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens [start:stop] of document i (and its mask), without touching the rest of the shard."""
        if not -self.n_documents <= i < self.n_documents:
            raise IndexError(f"document {i} out of range ({self.n_documents} documents)")
        i %= self.n_documents
        shard = int(self._shard_of_doc[i])
        length = int(self.lengths[i])
        stop = length if stop is None else min(stop, length)
        begin = int(self._starts[i])
        tokens = self._map(shard, "tokens")[begin + start:begin + stop]
        mask = self._map(shard, "mask")[begin + start:begin + stop] if self.has_mask else None
        return tokens, mask

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.slice(int(i))


class PackedSequences:
    """Fixed-length training sequences packed from whole documents in a seeded shuffled order (documents longer
    than seq_len are split into seq_len pieces): each item is a dict of int64 arrays input_ids (seq_len), labels
    (seq_len; labels[t] is the target for input_ids[t], i.e. the document's next token, already shifted; -100
    where the next token belongs to another document, beyond the data, or is masked out by the loss mask),
    position_ids (restarting at 0 at each segment start) and cu_seqlens (int32 segment offsets [0, ..., seq_len],
    a padding tail being the last segment). Deterministic given seed; epoch e uses the order of seed + e.
    Iterating runs `epochs` epochs (None = forever) from the current position; `state_dict()` after k items and
    `load_state_dict()` on a fresh instance continue with item k+1 exactly. (One iterator per instance: the
    position is the instance's, advanced as each item is yielded.)"""

    def __init__(self, split_dir, seq_len: int, seed: int = 0, pad_id: int = 0, epochs: int | None = None):
        if seq_len <= 0:
            raise ValueError("seq_len must be positive")
        self.dataset = split_dir if isinstance(split_dir, TokenDataset) else TokenDataset(split_dir)
        if self.dataset.n_tokens == 0:
            raise ValueError(f"{self.dataset.dir}: no tokens to pack")
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.pad_id = int(pad_id)
        self.epochs = epochs
        self.epoch = 0
        self.document_cursor = 0    # position in this epoch's shuffled order of the next segment's document
        self.token_offset = 0       # where in that document the next segment starts
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    def order(self, epoch: int) -> np.ndarray:
        """The shuffled document order of an epoch (cached for the current one)."""
        if self._order_epoch != epoch:
            self._order = np.random.default_rng(self.seed + epoch).permutation(self.dataset.n_documents)
            self._order_epoch = epoch
        return self._order

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "document_cursor": self.document_cursor, "token_offset": self.token_offset,
                "seed": self.seed, "seq_len": self.seq_len, "n_documents": self.dataset.n_documents}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "seq_len", "n_documents"):
            if key in state and int(state[key]) != mine[key]:
                raise ValueError(f"state was saved with {key}={state[key]}, this reader has {mine[key]}")
        self.epoch = int(state["epoch"])
        self.document_cursor = int(state["document_cursor"])
        self.token_offset = int(state["token_offset"])

    def _finished(self) -> bool:
        return self.epochs is not None and self.epoch >= self.epochs

    def __iter__(self) -> Iterator[dict]:
        seq_len = self.seq_len
        lengths = self.dataset.lengths
        n_documents = self.dataset.n_documents
        while not self._finished():
            input_ids = np.full(seq_len, self.pad_id, dtype=np.int64)
            labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
            position_ids = np.zeros(seq_len, dtype=np.int64)
            cu_seqlens = [0]
            fill = 0
            epoch, cursor, offset = self.epoch, self.document_cursor, self.token_offset
            while fill < seq_len:
                if cursor >= n_documents:           # epoch ends: emit what we have, never mix epochs
                    epoch, cursor, offset = epoch + 1, 0, 0
                    break
                document = int(self.order(epoch)[cursor])
                length = int(lengths[document])
                piece = min(length - offset, seq_len)
                if piece <= 0:                       # empty document
                    cursor, offset = cursor + 1, 0
                    continue
                if piece > seq_len - fill:
                    break
                # tokens of the piece plus the document's next token (the last label), if any
                tokens, mask = self.dataset.slice(document, offset, offset + piece + 1)
                input_ids[fill:fill + piece] = tokens[:piece]
                targets = np.full(piece, IGNORE_INDEX, dtype=np.int64)
                following = tokens[1:].astype(np.int64)
                if mask is not None:
                    following = np.where(mask[1:] != 0, following, IGNORE_INDEX)
                targets[:following.size] = following
                labels[fill:fill + piece] = targets
                position_ids[fill:fill + piece] = np.arange(piece)
                fill += piece
                cu_seqlens.append(fill)
                offset += piece
                if offset >= length:
                    cursor, offset = cursor + 1, 0
            if cursor >= n_documents:
                epoch, cursor, offset = epoch + 1, 0, 0
            self.epoch, self.document_cursor, self.token_offset = epoch, cursor, offset
            if fill == 0:                            # an epoch boundary reached exactly at a sequence boundary
                continue
            if fill < seq_len:
                position_ids[fill:] = np.arange(seq_len - fill)
                cu_seqlens.append(seq_len)
            yield {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
                   "cu_seqlens": np.asarray(cu_seqlens, dtype=np.int32)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m zhcoder.data.shards SPLIT_DIR", file=sys.stderr)
        return 2
    try:
        index = read_index(argv[0])
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{argv[0]}: split {index['split']}, {'complete' if index['complete'] else 'INCOMPLETE'}, "
          f"{len(index['shards'])} shards, {index['n_documents']:,} documents, {index['n_tokens']:,} tokens, "
          f"{index['dtype']} (vocab {index['vocab_size']:,}), masks: {index['with_mask']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
