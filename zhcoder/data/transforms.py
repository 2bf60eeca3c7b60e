"""Per-document text transforms for the code corpus: secret/PII redaction, fill-in-the-middle, repo-level samples.

Pure functions on strings (plus a `numpy.random.Generator` for FIM), so a datatrove pipeline step, a test or a
notebook can call them alike.

- `redact(text) -> (text, counts)` replaces personal data and secrets by placeholders and counts them per kind:

      kind           placeholder      what
      email          <EMAIL>          e-mail addresses (not RFC 2606 example domains, not `icon@2x.png` assets)
      ip_address     <IP_ADDRESS>     globally routable IPv4 / IPv6 (2000::/3) addresses
      key            <KEY>            AWS `AKIA…`/`ASIA…`, GitHub `ghp_…`/`gho_…`/`ghu_…`/`ghs_…`/`ghr_…`/
                                      `github_pat_…`, OpenAI-style `sk-…`, Stripe `sk_live_…`, Slack `xox?-…`,
                                      Hugging Face `hf_…`, Google `AIza…`; and high-entropy values assigned
                                      to names containing api_key / secret / token / access_key / auth_key /
                                      private_key
      password       <PASSWORD>       high-entropy values assigned to names containing password / passwd / pwd
      private_key    <PRIVATE_KEY>    a whole PEM/OpenSSH/PGP `-----BEGIN … PRIVATE KEY-----` block

  Choices (StarCoder's regex pipeline, bigcode-dataset/pii, is the reference; its placeholders are `<EMAIL>`,
  `<KEY>`, `<PASSWORD>`): addresses that identify nobody are left as they are — private, loopback, link-local,
  documentation (192.0.2.0/24, 2001:db8::/32), shared and reserved ranges (`ipaddress`'s `is_global` is False),
  like StarCoder, which skipped private IPs; unlike StarCoder, which swapped public IPs for random private ones, a
  placeholder replaces them, so redaction is visible. Well-known public DNS resolvers (8.8.8.8, 1.1.1.1, …) are
  kept, as StarCoder did. A dotted quad glued to a letter or dot (`v1.2.3.4`, `1.3.6.1.4.1`), made of single
  digits (`8.4.3.5`), or after "version", "==", "section", "§"… on its line is a version, section or OID number.
  Generic `name = "value"` secrets need a value of 8+ characters with a letter and a digit, Shannon entropy >= 3
  bits/char, no spaces, not a path/URL and not a template placeholder (`${X}`, `{{x}}`, `<your-key>`, `xxxx`,
  `changeme`…); unquoted values need 16+ characters on an env/YAML/INI line that starts with the name, so
  `self.pad_token_id = config.pad_token_id` stays; names with "tokeniz" or "public" (.NET `publicKeyToken`) are
  not secrets. A plain word like `password = "hunter"` is kept, so ordinary code is not mangled. The
  assignment's name and quotes stay; only the value is replaced. `@property` decorators, `pkg@1.2.3`,
  `user@localhost`, hex colours and UUIDs are untouched.

- FIM, character level (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle"; as
  StarCoder and Qwen2.5-Coder train): `fim_split` draws two cut points uniformly from 0..len(text) and sorts them;
  `fim_sample` turns a document into FIM with probability `rate`, then SPM with probability `spm_rate`:

      PSM   <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}<|endoftext|>
      SPM   <|fim_prefix|><|fim_suffix|>{suffix}<|fim_middle|>{prefix}{middle}<|endoftext|>
      plain {text}<|endoftext|>

  SPM is the FIM paper's "variant 2" (its appendix D), exactly what bigcode's Megatron-LM (SantaCoder, StarCoder)
  and NVIDIA Megatron-LM's `GPTFIMDataset` emit with the same three sentinels: `[prefix, suffix] suffix [middle]
  prefix middle`, so the prefix is joined to the middle and no new token is needed. A PSM sample with an empty
  prefix is byte-identical to an SPM sample with an empty prefix and both decode to the same text, so
  `fim_unsplit` is unambiguous. Documents that already contain a sentinel string cannot round-trip: `fim_sample`
  raises ValueError for them (`has_special_tokens` lets a pipeline drop or count them first).

- Repo level (Qwen2.5-Coder's format; the string is `zhcoder.chat.repo_prompt`'s plus `<|endoftext|>`):

      <|repo_name|>{name}\\n<|file_sep|>{path}\\n{content}\\n<|file_sep|>{path}\\n{content}<|endoftext|>

  `repo_files` parses it back exactly (contents may end in newlines or be empty).

    python -m zhcoder.data.transforms       # shows a redaction, a PSM and an SPM sample, a repo sample
    pytest -q tests/test_transforms.py
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from zhcoder.chat import FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME, repo_prompt

END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = (END_OF_TEXT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, REPO_NAME, FILE_SEP)

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
    "key": "<KEY>",
    "password": "<PASSWORD>",
    "private_key": "<PRIVATE_KEY>",
}

# ------------------------------------------------------------------------------------------------- redaction
_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----"
    r"([A-Za-z0-9+/=\s:,.\\-]*?)"          # base64 body, PEM headers (Proc-Type, DEK-Info), escaped "\n"
    r"(?:-----END \1-----|\Z)")            # an unterminated block (a truncated file) runs to the end

_TOKEN_PATTERNS = [re.compile(pattern) for pattern in (
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])",                   # AWS access key id
    r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])",              # GitHub classic tokens
    r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}",                            # GitHub fine-grained
    r"(?<![A-Za-z0-9_-])sk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{20,}(?![A-Za-z0-9_-])",  # OpenAI / Anthropic style
    r"(?<![A-Za-z0-9_])[rs]k_live_[A-Za-z0-9]{20,}",                                 # Stripe
    r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{34}(?![A-Za-z0-9_])",                          # Hugging Face
    r"(?<![A-Za-z0-9_-])xox[abposre]-[A-Za-z0-9-]{10,}",                             # Slack
    r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])",                     # Google API key
)]

_SECRET_NAME = (r"(?:api[_-]?key|apikey|secret|token|access[_-]?key|auth[_-]?key|private[_-]?key"
                r"|passw(?:or)?d|pwd)")
_SECRET_NAME_PATTERN = re.compile(_SECRET_NAME, re.IGNORECASE)
# The name is any word, checked against _SECRET_NAME afterwards: `\w*secret\w*` in the pattern itself would
# backtrack quadratically on long identifier-like runs (minified code, base64 blobs).
_ASSIGNMENT = re.compile(
    r"\b(?P<name>\w{1,100})(?P<close>['\"]?)[ \t]*(?::=|=>|[:=])[ \t]*"
    r"(?:(?P<quote>['\"`])(?P<quoted>[^'\"`\n]{8,200})(?P=quote)"
    r"|(?P<bare>[A-Za-z0-9+/=_.~!@#$%^&*-]{16,200})(?=[\s;,)]|$))",
    re.IGNORECASE)
_LINE_START = re.compile(r"[ \t]*(?:export[ \t]+)?")
_PLACEHOLDER_VALUE = re.compile(
    r"\$\{|\{\{|%\(|%s|<[^>]*>|xxxx|\*\*\*|\.\.\.|changeme|your[_-]|example|placeholder|dummy|redacted",
    re.IGNORECASE)

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-]|\.[A-Za-z0-9])")
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net", "example", "test", "invalid", "localhost")
_FILE_EXTENSIONS = frozenset(
    "png jpg jpeg gif svg webp ico bmp tif tiff pdf js mjs ts tsx jsx css scss py rb go rs java kt c h cc cpp hpp"
    " json yaml yml toml xml html md txt zip gz tar mp3 mp4 wav ttf woff woff2 lock".split())

_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                   r"(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|\d+\.\d+\.\d+\.\d+)(?![\w:.])")
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_PUBLIC_RESOLVERS = frozenset({
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222", "208.67.220.220",
    "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111", "2606:4700:4700::1001"})
_VERSION_BEFORE = re.compile(r"version|\bver\b|==|>=|<=|~=|section|chapter|clause|§", re.IGNORECASE)


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s character distribution (0 for the empty string)."""
    if not value:
        return 0.0
    counts = Counter(value)
    return -sum(count / len(value) * math.log2(count / len(value)) for count in counts.values())


def _looks_secret(value: str) -> bool:
    return (not any(ch.isspace() for ch in value)
            and any(ch.isalpha() for ch in value) and any(ch.isdigit() for ch in value)
            and not ("/" in value and "." in value)          # a path or URL, not base64
            and not _PLACEHOLDER_VALUE.search(value)
            and shannon_entropy(value) >= 3.0)


def _email_is_personal(address: str) -> bool:
    domain = address.rsplit("@", 1)[1].lower()
    if domain.rsplit(".", 1)[-1] in _FILE_EXTENSIONS:          # icon@2x.png, logo@3x.webp
        return False
    return not any(domain == reserved or domain.endswith("." + reserved) for reserved in _RESERVED_DOMAINS)


def _ip_is_personal(candidate: str, text: str, start: int) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if not address.is_global or candidate.lower() in _PUBLIC_RESOLVERS:
        return False
    if address.version == 6:
        return address in _IPV6_GLOBAL_UNICAST
    if all(len(part) == 1 for part in candidate.split(".")):   # 8.4.3.5: a section or version number
        return False
    line_start = text.rfind("\n", 0, start) + 1
    return not _VERSION_BEFORE.search(text, max(line_start, start - 40), start)


def _holds_key(match: re.Match) -> bool:
    """A PRIVATE KEY block with 40 or more base64 characters (fewer: a mention, not a key)."""
    return sum(ch.isalnum() or ch in "+/=" for ch in match.group(2)) >= 40


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace e-mails, public IP addresses, API keys/tokens, passwords and private keys with placeholders.

    Returns the new text and a count per kind (every kind of `PLACEHOLDERS` present, zero included).
    """
    counts = dict.fromkeys(PLACEHOLDERS, 0)

    def placeholder(kind: str, personal=lambda match: True):
        """A re.sub replacement: `kind`'s placeholder where `personal(match)`, counted; else the match itself."""
        def replace(match: re.Match) -> str:
            if not personal(match):
                return match.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]
        return replace

    def assignment(match: re.Match) -> str:
        group = "quoted" if match.group("quoted") is not None else "bare"
        name = match.group("name").lower()
        if (not _SECRET_NAME_PATTERN.search(name) or "tokeniz" in name or "public" in name
                or not _looks_secret(match.group(group))):
            return match.group(0)
        if group == "bare":                                  # unquoted: only env / YAML / INI lines
            line_start = match.string.rfind("\n", 0, match.start()) + 1
            if not _LINE_START.fullmatch(match.string, line_start, match.start()):
                return match.group(0)
        kind = "password" if re.search(r"passw|pwd", match.group("name"), re.IGNORECASE) else "key"
        counts[kind] += 1
        start, end = match.span(group)
        return match.string[match.start():start] + PLACEHOLDERS[kind] + match.string[end:match.end()]

    text = _PRIVATE_KEY.sub(placeholder("private_key", _holds_key), text)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(placeholder("key"), text)
    text = _ASSIGNMENT.sub(assignment, text)
    text = _EMAIL.sub(placeholder("email", lambda m: _email_is_personal(m.group(0))), text)
    ip = placeholder("ip_address", lambda m: _ip_is_personal(m.group(0), m.string, m.start()))
    text = _IPV6.sub(ip, _IPV4.sub(ip, text))
    return text, counts


# ------------------------------------------------------------------------------------------------------- FIM
def has_special_tokens(text: str) -> bool:
    """True when `text` contains a sentinel string (`<|endoftext|>`, FIM or repo tokens) as plain characters."""
    return any(token in text for token in SPECIAL_TOKENS)


def fim_split(text: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(prefix, middle, suffix): two cut points drawn uniformly from 0..len(text), sorted; any part may be empty."""
    low, high = sorted(int(cut) for cut in rng.integers(0, len(text) + 1, size=2))
    return text[:low], text[low:high], text[high:]


def fim_format(prefix: str, middle: str, suffix: str, *, spm: bool = False) -> str:
    """One FIM training sample in PSM order, or SPM (the FIM paper's variant 2) when `spm`; ends with <|endoftext|>."""
    if spm:
        return f"{FIM_PREFIX}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{prefix}{middle}{END_OF_TEXT}"
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}{END_OF_TEXT}"


def fim_sample(text: str, rng: np.random.Generator, rate: float = 0.5, spm_rate: float = 0.5) -> str:
    """With probability `rate` a FIM sample of `text` (SPM with probability `spm_rate`, else PSM), otherwise
    `text + "<|endoftext|>"`. Draws from `rng` in a fixed order, so the same seed gives the same samples.
    Raises ValueError when `text` already contains a sentinel string (see `has_special_tokens`)."""
    if not 0.0 <= rate <= 1.0 or not 0.0 <= spm_rate <= 1.0:
        raise ValueError(f"rate and spm_rate must lie in [0, 1], got {rate} and {spm_rate}")
    if has_special_tokens(text):
        raise ValueError("document contains a special token string; drop or escape it before FIM")
    if rng.random() >= rate:
        return text + END_OF_TEXT
    prefix, middle, suffix = fim_split(text, rng)
    return fim_format(prefix, middle, suffix, spm=bool(rng.random() < spm_rate))


def fim_unsplit(sample: str) -> str:
    """The original document of a `fim_sample` output: PSM, SPM or plain (a trailing <|endoftext|> optional)."""
    body = sample[:-len(END_OF_TEXT)] if sample.endswith(END_OF_TEXT) else sample
    if body.startswith(FIM_PREFIX + FIM_SUFFIX):              # SPM (or PSM with an empty prefix: same text)
        suffix, sep, prefix_middle = body[len(FIM_PREFIX + FIM_SUFFIX):].partition(FIM_MIDDLE)
        if not sep:
            raise ValueError("SPM sample without <|fim_middle|>")
        return prefix_middle + suffix
    if body.startswith(FIM_PREFIX):
        prefix, sep1, rest = body[len(FIM_PREFIX):].partition(FIM_SUFFIX)
        suffix, sep2, middle = rest.partition(FIM_MIDDLE)
        if not (sep1 and sep2):
            raise ValueError("PSM sample without <|fim_suffix|> and <|fim_middle|>")
        return prefix + middle + suffix
    return body


# ------------------------------------------------------------------------------------------------ repo level
def repo_sample(repo_name: str, files: Iterable[tuple[str, str]]) -> str:
    """Repo-level pre-training sample: `zhcoder.chat.repo_prompt`'s format ending in <|endoftext|>.

    Raises ValueError for a name or path with a newline, a repeated path, or text holding a sentinel string:
    each would make the sample ambiguous.
    """
    entries = [(str(path), str(content)) for path, content in files]
    if "\n" in repo_name or has_special_tokens(repo_name):
        raise ValueError(f"repository name {repo_name!r} must be one line without special tokens")
    seen = set()
    for path, content in entries:
        if "\n" in path or has_special_tokens(path):
            raise ValueError(f"file path {path!r} must be one line without special tokens")
        if path in seen:
            raise ValueError(f"file path {path!r} appears twice in repository {repo_name!r}")
        seen.add(path)
        if has_special_tokens(content):
            raise ValueError(f"file {path!r} contains a special token string")
    return repo_prompt(repo_name, entries) + END_OF_TEXT


def parse_repo_sample(sample: str) -> tuple[str, list[tuple[str, str]]]:
    """(repo name, [(path, content), …]) of a `repo_sample` string."""
    body = sample[:-len(END_OF_TEXT)] if sample.endswith(END_OF_TEXT) else sample
    if not body.startswith(REPO_NAME) or "\n" not in body:
        raise ValueError("not a repo-level sample: it must start with <|repo_name|>NAME and a newline")
    name, _, rest = body[len(REPO_NAME):].partition("\n")
    if not rest:
        return name, []
    chunks = rest.split(FILE_SEP)
    if chunks[0] != "":
        raise ValueError("text between the repository name and the first <|file_sep|>")
    files = []
    for index, chunk in enumerate(chunks[1:], start=1):
        if index < len(chunks) - 1:                           # files are joined by "\n"; drop that separator
            if not chunk.endswith("\n"):
                raise ValueError("files must be separated by a newline before <|file_sep|>")
            chunk = chunk[:-1]
        path, sep, content = chunk.partition("\n")
        if not sep:
            raise ValueError(f"file entry {path!r} has no newline after its path")
        files.append((path, content))
    return name, files


def repo_files(sample: str) -> list[tuple[str, str]]:
    """[(path, content), …] of a `repo_sample` string, in order."""
    return parse_repo_sample(sample)[1]


if __name__ == "__main__":
    demo = ('EMAIL = "zhang.san@company.cn"  # 张三\nSERVER = "203.0.113.7"  # documentation range, kept\n'
            'HOST = "93.184.216.34"\nAWS_KEY = "AKIAIOSFODNN7EXAMPLE"\napi_key = "q8Zr2LmX0vTnB4sK9wYp"\n')
    redacted, found = redact(demo)
    print(redacted, found, sep="\n")
    generator = np.random.default_rng(0)
    code = "def 加(a, b):\n    return a + b\n"
    print(repr(fim_sample(code, generator, rate=1.0, spm_rate=0.0)))
    print(repr(fim_sample(code, generator, rate=1.0, spm_rate=1.0)))
    print(repr(repo_sample("zhcoder/demo", [("a.py", "import b\n"), ("b.py", "X = 1")])))
