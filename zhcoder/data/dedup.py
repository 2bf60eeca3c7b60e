"""Deduplication of a code corpus: exact (normalised content hash) and near-duplicate (MinHash LSH).

What
  * `normalize_for_hash(text)`: newlines normalised (CRLF and CR -> LF), trailing whitespace stripped from every
    line, leading/trailing blank space of the whole text stripped. Two files that differ only in line endings or
    trailing blanks normalise to the same string.
  * `content_hash(text)`: SHA-256 hex digest of the UTF-8 encoded normalised text.
  * `ExactDedup`: remembers the hash of every text it is shown; `seen(text)` is True when an equal (normalised)
    text was shown before. The first one is the one kept; `add(key, text)` returns the key of that first one.
  * `shingles(text, n)`: the set of word n-grams ("shingles") of a text, see *Tokenisation* below.
  * `NearDedup`: MinHash signatures of the shingle sets (`datasketch.MinHash`) indexed by banded LSH
    (`datasketch.MinHashLSH`). `add(key, text)` returns the key of an already-kept file whose estimated Jaccard
    similarity with `text` is >= `threshold`, or None -- in which case the file is kept and indexed. Every LSH
    candidate is verified with the MinHash Jaccard estimate (`MinHash.jaccard`), so a mere band collision never
    removes a file. One file per cluster is kept: the first one seen (clusters are formed greedily in input
    order; a file is compared with the kept files only, never with removed ones).

Tokenisation (for `shingles`)
  Tokens are maximal runs of word characters (`\\w`: letters, digits, underscore, in any script) split at
  whitespace and punctuation, which are dropped; a CJK character (Han ideographs, kana, Hangul) is a token by
  itself, because Chinese/Japanese text has no spaces between words. So `总数 = count_items(x)  # 计算总数` gives the
  tokens `总 数 count_items x 计 算 总 数`. Shingles are the space-joined windows of `n` consecutive tokens; a text
  with fewer than `n` (but at least one) tokens has a single shingle made of all of them; a text with no tokens has
  no shingles.

Defaults and sources
  threshold = 0.85       Jaccard similarity of the shingle sets. Allamanis (2019), "The adverse effects of code
                         duplication in machine learning models of code", uses 0.8 on token sets; the BigCode
                         near-dedup of The Stack / StarCoder (bigcode-dataset `near_deduplication`) uses 0.85 with
                         MinHash LSH, as does CodeParrot's `minhash_deduplication.py` (jaccard_threshold 0.85).
  shingle_size = 5       5-grams of tokens, as in the BigCode near-dedup ("ngram_size=5").
  num_perm = 128         permutations per signature (BigCode used 256; 128 gives a Jaccard estimate with a standard
                         error of about sqrt(J(1-J)/128) ~ 0.03 at J = 0.85, which is enough for dedup).
  seed = 1               the MinHash permutation seed (datasketch's default); results are deterministic for a seed.
  lsh_threshold = threshold - 0.1 (not below 0.05): the LSH index is tuned to a lower threshold than the one
                         applied, so that files just above `threshold` are rarely missed by the banding (fewer false
                         negatives); the false positives this brings are removed by the verification step.
  Exact dedup on a normalised SHA-256 hash follows The Stack / StarCoder (exact dedup by content hash before
  near-dedup); the normalisation (line endings, trailing blanks) is zhcoder's choice.

How to run

    from zhcoder.data.dedup import ExactDedup, NearDedup
    exact, near = ExactDedup(), NearDedup(threshold=0.85, shingle_size=5)
    for path, text in files:
        if exact.seen(text):
            continue                      # count "exact_duplicate"
        if near.add(path, text) is not None:
            continue                      # count "near_duplicate"
        keep(path, text)

Memory: ExactDedup keeps 32 bytes per distinct text; NearDedup keeps a signature (num_perm 64-bit values) plus the
LSH bands per kept file, all in memory. Nothing is ever serialised (no pickle); the index lives for one run.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["normalize_for_hash", "content_hash", "ExactDedup", "tokens", "shingles", "NearDedup"]

_NEWLINES = re.compile(r"\r\n?")

# CJK ranges whose characters are tokens by themselves: CJK punctuation is excluded (it is not \w anyway).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f"
_TOKEN = re.compile(rf"[^\W{_CJK}]+|[{_CJK}]")


def normalize_for_hash(text: str) -> str:
    """Normalise line endings to LF, strip trailing whitespace from each line, strip the whole text."""
    text = _NEWLINES.sub("\n", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def content_hash(text: str) -> str:
    """SHA-256 hex digest of `normalize_for_hash(text)` encoded as UTF-8 (surrogates escaped, never an error)."""
    return hashlib.sha256(normalize_for_hash(text).encode("utf-8", "surrogatepass")).hexdigest()


class ExactDedup:
    """Exact deduplication by normalised content hash; the first text of each hash is the one kept."""

    def __init__(self) -> None:
        self._first: dict[bytes, str] = {}  # sha256 digest -> key of the first text with it

    def seen(self, text: str, key: str = "") -> bool:
        """True when an equal normalised text was shown before; otherwise remember it (under `key`) and return False."""
        return self.add(key, text) is not None

    def add(self, key: str, text: str) -> str | None:
        """Key of the first text equal to `text` (normalised) if there was one, else remember `text` and return None."""
        digest = bytes.fromhex(content_hash(text))
        first = self._first.get(digest)
        if first is not None:
            return first
        self._first[digest] = key
        return None

    def __len__(self) -> int:
        """Number of distinct (kept) texts."""
        return len(self._first)


def tokens(text: str) -> list[str]:
    """Word tokens of `text` (see the module docstring): runs of \\w split at whitespace/punctuation, CJK per char."""
    return _TOKEN.findall(text)


def shingles(text: str, n: int = 5) -> set[str]:
    """Set of space-joined windows of `n` consecutive tokens; all tokens as one shingle when there are fewer than n."""
    if n < 1:
        raise ValueError(f"shingle size must be >= 1, got {n}")
    toks = tokens(text)
    if not toks:
        return set()
    if len(toks) < n:
        return {" ".join(toks)}
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


class NearDedup:
    """Near-duplicate removal with MinHash LSH (datasketch), keeping the first file of each cluster.

    `add(key, text)` returns the key of an already-kept file whose MinHash Jaccard estimate with `text` is
    >= `threshold` (the most similar one; ties go to the earliest kept), or None after keeping `text`.
    A text with no tokens is never a near-duplicate and is not indexed (exact dedup handles empty files).
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, shingle_size: int = 5, seed: int = 1, *,
                 lsh_threshold: float | None = None) -> None:
        from datasketch import MinHashLSH

        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {shingle_size}")
        self.threshold, self.num_perm, self.shingle_size, self.seed = threshold, num_perm, shingle_size, seed
        self.lsh_threshold = max(threshold - 0.1, 0.05) if lsh_threshold is None else lsh_threshold
        # In-memory dict storage; prepickle=False: keys are plain strings, nothing is pickled.
        self._lsh = MinHashLSH(threshold=self.lsh_threshold, num_perm=num_perm, prepickle=False)
        self._kept: dict[str, tuple[int, object]] = {}  # key -> (insertion order, MinHash)

    def minhash(self, text: str):
        """The datasketch MinHash of `text`'s shingle set (None when it has no shingles)."""
        from datasketch import MinHash

        sh = shingles(text, self.shingle_size)
        if not sh:
            return None
        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch([s.encode("utf-8", "surrogatepass") for s in sorted(sh)])
        return m

    def minhash_from(self, hashvalues):
        """The MinHash whose signature is `hashvalues` (as `minhash(text).hashvalues` gave, in any process)."""
        from datasketch import MinHash

        scheme = getattr(MinHash(num_perm=self.num_perm, seed=self.seed), "scheme", None)
        extra = {"scheme": scheme} if scheme else {}
        return MinHash(num_perm=self.num_perm, seed=self.seed, hashvalues=hashvalues, **extra)

    def query(self, text: str, minhash=None) -> tuple[str, float] | None:
        """(key, Jaccard estimate) of the best kept near-duplicate of `text`, or None; does not add `text`."""
        m = self.minhash(text) if minhash is None else minhash
        if m is None:
            return None
        best: tuple[int, str, float] | None = None
        for key in self._lsh.query(m):
            order, other = self._kept[key]
            j = m.jaccard(other)
            if j >= self.threshold and (best is None or (j, -order) > (best[2], -best[0])):
                best = (order, key, j)
        return None if best is None else (best[1], best[2])

    def add(self, key: str, text: str) -> str | None:
        """Key of a kept near-duplicate of `text` (which is then not kept), or None after keeping `text` as `key`."""
        if key in self._kept:
            raise ValueError(f"key already added: {key!r}")
        m = self.minhash(text)
        hit = None if m is None else self.add_minhash(key, m)
        return None if hit is None else hit[0]

    def add_minhash(self, key: str, minhash) -> tuple[str, float] | None:
        """`add` for a signature computed elsewhere (same num_perm and seed, e.g. in another process by
        `minhash()`): (key, Jaccard estimate) of the kept near-duplicate, or None after keeping it as `key`."""
        if key in self._kept:
            raise ValueError(f"key already added: {key!r}")
        hit = self.query("", minhash=minhash)
        if hit is not None:
            return hit
        self._kept[key] = (len(self._kept), minhash)
        self._lsh.insert(key, minhash)
        return None

    def __len__(self) -> int:
        """Number of kept (indexed) files."""
        return len(self._kept)

    def __contains__(self, key: str) -> bool:
        return key in self._kept
