"""Token shards: writer/reader round trip, crash safety of the index, and the packer's contract
(document order, per-document positions, labels that never cross documents, masks, seeds, exact resume).

    pytest -q tests/test_shards.py
"""

import json
import os

import numpy as np
import pytest

from zhcoder.data.shards import IGNORE_INDEX, PackedSequences, ShardWriter, TokenDataset, read_index


def random_documents(rng, count, vocab_size, max_length=40, with_mask=False):
    documents = []
    for _ in range(count):
        length = int(rng.integers(1, max_length + 1))
        tokens = rng.integers(0, vocab_size, size=length)
        mask = rng.integers(0, 2, size=length).astype(np.uint8) if with_mask else None
        documents.append((tokens, mask))
    return documents


def write(tmp_path, documents, vocab_size, shard_tokens=2**20, with_mask=False, split="train"):
    with ShardWriter(tmp_path, split, vocab_size=vocab_size, shard_tokens=shard_tokens, with_mask=with_mask) as w:
        for tokens, mask in documents:
            w.add(tokens, mask)
    return tmp_path / split


@pytest.mark.parametrize("vocab_size, dtype", [(65536, np.uint16), (151936, np.uint32)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_round_trip(tmp_path, vocab_size, dtype, with_mask):
    rng = np.random.default_rng(0)
    documents = random_documents(rng, 50, vocab_size, with_mask=with_mask)
    documents[3] = (np.array([vocab_size - 1, 0, vocab_size - 1]), np.array([1, 0, 1]) if with_mask else None)
    split = write(tmp_path, documents, vocab_size, shard_tokens=200, with_mask=with_mask)
    index = read_index(split)
    assert index["dtype"] == np.dtype(dtype).name and index["with_mask"] == with_mask and index["complete"]
    assert len(index["shards"]) > 1                      # several shards
    ds = TokenDataset(split)
    assert len(ds) == 50 and ds.n_tokens == sum(len(t) for t, _ in documents)
    for i, (tokens, mask) in enumerate(documents):
        got_tokens, got_mask = ds[i]
        assert got_tokens.dtype == dtype
        np.testing.assert_array_equal(got_tokens, tokens)
        if with_mask:
            np.testing.assert_array_equal(got_mask, mask)
        else:
            assert got_mask is None
    # raw files are exactly the documented format
    shard = index["shards"][0]
    raw = np.fromfile(split / shard["tokens"], dtype=dtype)
    starts = np.fromfile(split / shard["docs"], dtype=np.int64)
    assert raw.size == shard["n_tokens"] and starts.size == shard["n_documents"] and starts[0] == 0
    np.testing.assert_array_equal(raw[starts[1]:starts[2]], documents[1][0])


def test_writer_rejects_bad_input(tmp_path):
    with ShardWriter(tmp_path, vocab_size=100) as w:
        with pytest.raises(ValueError):
            w.add([5, 100])
        with pytest.raises(ValueError):
            w.add([-1])
        with pytest.raises(ValueError):
            w.add([1, 2], mask=[1, 1])                   # no masks in this split
        w.add([1, 2, 3])
    with pytest.raises(ValueError):
        ShardWriter(tmp_path / "x")                      # vocab_size is required


def test_index_lists_only_complete_shards(tmp_path):
    writer = ShardWriter(tmp_path, "train", vocab_size=1000, shard_tokens=10)
    split = tmp_path / "train"
    for _ in range(3):
        writer.add(np.arange(5))                         # shard 0 is full (10 tokens) after the 2nd doc
    # shard 0 = docs 0,1 is complete; doc 2 sits in a temp file
    index = read_index(split)
    assert not index["complete"] and [s["n_documents"] for s in index["shards"]] == [2]
    assert (split / "tokens-00001.bin.tmp").exists() and not (split / "tokens-00001.bin").exists()
    with pytest.raises(ValueError, match="did not finish"):
        TokenDataset(split)                              # an interrupted build is not data
    partial = TokenDataset(split, allow_incomplete=True)
    assert len(partial) == 2                             # the temp file is never read
    writer.close()
    assert read_index(split)["complete"] and len(TokenDataset(split)) == 3
    assert not list(split.glob("*.tmp"))


def test_crash_inside_context_leaves_no_complete_data(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, vocab_size=1000, shard_tokens=4) as w:
            w.add([1, 2, 3, 4])
            w.add([5, 6])
            raise RuntimeError("killed")
    split = tmp_path / "train"
    assert not read_index(split)["complete"] and not list(split.glob("*.tmp"))
    with pytest.raises(ValueError):
        TokenDataset(split)


def test_missing_index_is_not_data(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    np.arange(10, dtype=np.uint16).tofile(split / "tokens-00000.bin")
    np.zeros(1, dtype=np.int64).tofile(split / "docs-00000.bin")
    with pytest.raises(FileNotFoundError):
        TokenDataset(split)
    # a new writer in the same place starts clean and never pairs an old index with new files
    write(tmp_path, [(np.arange(5), None)], vocab_size=1000)
    write(tmp_path, [(np.arange(3), None)], vocab_size=1000)
    ds = TokenDataset(split)
    assert len(ds) == 1 and list(ds[0][0]) == [0, 1, 2]


def test_reader_uses_memory_maps(tmp_path):
    split = write(tmp_path, [(np.arange(1000) % 50, None)] * 20, vocab_size=50)
    ds = TokenDataset(split)
    tokens, _ = ds[7]
    base = tokens
    while not isinstance(base, np.memmap) and getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, np.memmap)                   # a view into the file, not a copy in memory
    assert not tokens.flags.writeable


def collect_documents_from_packing(items):
    """Reassemble document pieces from packed items, using cu_seqlens and labels."""
    pieces = []
    for item in items:
        cu = item["cu_seqlens"]
        for a, b in zip(cu[:-1], cu[1:]):
            pieces.append((item["input_ids"][a:b], item["labels"][a:b], item["position_ids"][a:b]))
    return pieces


def test_packing_contract(tmp_path):
    rng = np.random.default_rng(1)
    vocab_size, seq_len = 1000, 16
    documents = random_documents(rng, 60, vocab_size, max_length=40, with_mask=True)
    split = write(tmp_path, documents, vocab_size, shard_tokens=300, with_mask=True)
    packer = PackedSequences(split, seq_len, seed=3, pad_id=7, epochs=1)
    items = list(packer)
    assert all(item[k].shape == (seq_len,) and item[k].dtype == np.int64
               for item in items for k in ("input_ids", "labels", "position_ids"))
    for item in items:
        cu = item["cu_seqlens"]
        assert cu.dtype == np.int32 and cu[0] == 0 and cu[-1] == seq_len and np.all(np.diff(cu) > 0)
        for a, b in zip(cu[:-1], cu[1:]):                # positions restart at every segment start
            np.testing.assert_array_equal(item["position_ids"][a:b], np.arange(b - a))

    # walk the expected order: whole documents, split into seq_len pieces, each piece a segment
    order = np.random.default_rng(3).permutation(len(documents))
    expected = []
    for d in order:
        tokens, mask = documents[d]
        for start in range(0, len(tokens), seq_len):
            piece = tokens[start:start + seq_len]
            nxt = np.arange(start + 1, start + 1 + len(piece))
            labels = np.where(nxt < len(tokens), tokens[np.minimum(nxt, len(tokens) - 1)], IGNORE_INDEX)
            labels = np.where((nxt < len(tokens)) & (mask[np.minimum(nxt, len(tokens) - 1)] == 1), labels,
                              IGNORE_INDEX)
            expected.append((piece, labels))
    got = collect_documents_from_packing(items)
    # drop padding segments (inputs all pad, labels all ignored, and not a real piece)
    real = []
    it = iter(expected)
    want = next(it, None)
    for ids, labels, _ in got:
        if want is not None and len(ids) == len(want[0]) and np.array_equal(ids, want[0]):
            np.testing.assert_array_equal(labels, want[1])   # labels never cross documents; masks honoured
            real.append(ids)
            want = next(it, None)
        else:
            assert np.all(ids == 7) and np.all(labels == IGNORE_INDEX)
    assert want is None and len(real) == len(expected)       # every document, in order, nothing lost

    # every token except a document's first is a target exactly once, and only where its mask is 1
    n_targets = sum(int((item["labels"] != IGNORE_INDEX).sum()) for item in items)
    assert n_targets == sum(int(m[1:].sum()) for _, m in documents)


def test_masked_tokens_get_ignore_index(tmp_path):
    # prompt (mask 0) then answer (mask 1): only answer tokens are targets
    split = write(tmp_path, [(np.array([10, 11, 12, 20, 21, 22]), np.array([0, 0, 0, 1, 1, 1]))],
                  vocab_size=100, with_mask=True)
    item = next(iter(PackedSequences(split, 8, epochs=1)))
    assert item["input_ids"].tolist() == [10, 11, 12, 20, 21, 22, 0, 0]
    assert item["labels"].tolist() == [-100, -100, 20, 21, 22, -100, -100, -100]


def test_long_document_pieces_keep_their_next_token(tmp_path):
    split = write(tmp_path, [(np.arange(1, 11), None)], vocab_size=100)
    items = list(PackedSequences(split, 4, epochs=1))
    assert [i["input_ids"].tolist() for i in items] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]
    assert [i["labels"].tolist() for i in items] == [[2, 3, 4, 5], [6, 7, 8, 9], [10, -100, -100, -100]]
    assert [i["position_ids"].tolist() for i in items] == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 0, 1]]


def take(packer, n):
    out = []
    if n == 0:
        return out
    for item in packer:
        out.append(item)
        if len(out) == n:
            break
    return out


def test_seeds_and_epochs(tmp_path):
    rng = np.random.default_rng(2)
    split = write(tmp_path, random_documents(rng, 40, 500, max_length=20), vocab_size=500, shard_tokens=100)
    per_epoch_5 = len(list(PackedSequences(split, 32, seed=5, epochs=1)))
    per_epoch_6 = len(list(PackedSequences(split, 32, seed=6, epochs=1)))
    total = 3 * max(per_epoch_5, per_epoch_6)
    a = take(PackedSequences(split, 32, seed=5), total)
    b = take(PackedSequences(split, 32, seed=5), total)
    c = take(PackedSequences(split, 32, seed=6), total)
    stack = lambda items: np.stack([i["input_ids"] for i in items])
    assert np.array_equal(stack(a), stack(b))
    assert not np.array_equal(stack(a), stack(c))
    # epoch 1 of seed 5 uses the order of seed 5 + 1: it equals epoch 0 of seed 6
    np.testing.assert_array_equal(stack(a[per_epoch_5:per_epoch_5 + per_epoch_6]), stack(c[:per_epoch_6]))
    assert len(list(PackedSequences(split, 32, seed=5, epochs=2))) == per_epoch_5 + per_epoch_6


def test_resume_continues_exactly(tmp_path):
    rng = np.random.default_rng(4)
    split = write(tmp_path, random_documents(rng, 30, 500, max_length=50, with_mask=True), vocab_size=500,
                  shard_tokens=200, with_mask=True)
    per_epoch = len(list(PackedSequences(split, 24, seed=9, epochs=1)))
    total = 2 * per_epoch + 3                               # spans epochs
    reference = take(PackedSequences(split, 24, seed=9), total)
    stopped_inside_a_document = False
    for k in [0, 1, 2, 5, per_epoch - 1, per_epoch, per_epoch + 1, total - 1]:
        first = PackedSequences(split, 24, seed=9)
        head = take(first, k)
        state = json.loads(json.dumps(first.state_dict()))  # a state survives JSON (goes into a checkpoint)
        stopped_inside_a_document |= state["token_offset"] > 0
        resumed = PackedSequences(split, 24, seed=9)
        resumed.load_state_dict(state)
        tail = take(resumed, total - k)
        assert len(head + tail) == total
        for want, got in zip(reference, head + tail):
            for key in want:
                np.testing.assert_array_equal(want[key], got[key])
    assert stopped_inside_a_document                        # the hard case was exercised
    with pytest.raises(ValueError):
        PackedSequences(split, 24, seed=10).load_state_dict(state)


def test_cli_summary(tmp_path, capsys):
    from zhcoder.data.shards import main
    split = write(tmp_path, [(np.arange(5), None)], vocab_size=100)
    assert main([str(split)]) == 0 and "1 documents" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 1
    assert os.path.exists(split / "index.json")
