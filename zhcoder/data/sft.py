"""SFT data: chat JSONL (OpenAI `messages`, Alpaca, ShareGPT) and prompt-completion JSONL -> token shards with a
loss mask on what the model is to write.

    zhcoder data sft chats.jsonl alpaca.jsonl --tokenizer TOKENIZER_DIR --out data/sft
    pytest -q tests/test_sft.py

Each JSONL row is detected on its own:
- OpenAI: `{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": ..., "tool_calls": [...]}, ...],
  "tools": [...]?}`; assistant `reasoning_content` is passed through to the template.
- Alpaca: `{"instruction", "input"?, "output", "system"?, "history"?: [[instruction, output], ...]}`; the user turn is
  `instruction + "\\n\\n" + input` when `input` is not empty, else `instruction`.
- ShareGPT: `{"conversations": [{"from": "system"|"human"|"gpt"|"tool", "value": ...}], "system"?, "tools"?}`
  (`user`/`assistant` accepted as `from` too).
- Prompt-completion (TRL's non-conversational form): `{"prompt": str, "completion": str}`, no chat template: plain
  text the model continues, as in code completion. Prompt and completion are tokenised apart and joined (the
  tokenisation of inference, where the prompt is encoded and the model writes the rest), then `<|endoftext|>`;
  the mask is 1 on the completion and `<|endoftext|>`, which teaches the model to stop. An empty prompt makes
  the row plain text trained whole. These need only `<|endoftext|>` in the tokenizer; conversations need its
  ChatML tokens too (a conversation row is counted as malformed otherwise).

A conversation is rendered with the chat template (`zhcoder.chat.render_chat`; the tokenizer's own template by
default, else "qwen3"), exactly as inference would see it.

Loss-mask convention (what is trained). For every assistant turn the template renders
`<|im_start|>assistant\\n` + BODY + `<|im_end|>` + `\\n`; the mask is 1 on exactly BODY + `<|im_end|>`:
- BODY is everything the template writes for that turn after the header: the content, the tool calls in the
  template's own syntax, and for Qwen3 the `<think>...</think>` block it writes on turns after the last user query
  (an empty `<think>\\n\\n</think>\\n\\n` on the final turn). That is the text the model produces when generation
  starts from the prompt `<|im_start|>assistant\\n`, which is the template's generation prompt.
- `<|im_end|>` is trained: it is how the model learns to stop.
- The header `<|im_start|>assistant\\n` is not trained (the prompt supplies it), nor is the `\\n` after `<|im_end|>`:
  the engine stops at `<|im_end|>`, so the model never produces that newline. In transformers' terms this is
  `return_assistant_tokens_mask` with `{% generation %}` around content + `<|im_end|>` (tests/test_sft.py checks
  ids and mask against transformers); a template that puts `<|im_end|>\\n` inside the tag also trains the newline.
- System, user and tool turns, and template text such as Qwen2.5's default system prompt, are never trained.
With `train_on="last"` only the final assistant turn is trained; earlier ones are context.

How spans are found. The rendered text is cut at ChatML markers: each `<|im_start|>assistant` header (with its
newline) opens a trained span that ends at the next `<|im_end|>`; there must be exactly one header per assistant
message, and no message may contain ChatML control tokens (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`), so the
cut is exact for every ChatML template whatever it does to earlier turns (Qwen3 drops their think blocks). The
pieces are tokenised one by one and joined: the BPE never merges the header's newline into a span's first token,
which is the tokenisation the model sees at inference (prompt ending `assistant\\n`, then its own tokens), and the
masked tokens decode to exactly the span text.

Samples longer than `max_tokens` are dropped and counted, never truncated. Rows that cannot be used (bad JSON or
UTF-8, unknown format, an assistant turn with no content and no tool calls, no assistant turn, control tokens in the
text, a template error) are skipped and counted with their file and line number. Kept samples go to a train or val
split (a hash of the sample and `seed` decides, so exact duplicates land in the same split; rows with the same
optional `"group"` string are hashed by it instead, so rows made from one source stay together), written with
`zhcoder.data.shards.ShardWriter(with_mask=True)`; `out_dir/stats.json` records what happened.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from zhcoder.chat import ChatTemplateError, render_chat
from zhcoder.tokenizer import Tokenizer

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
CONTROL_TOKENS = (IM_START, IM_END, END_OF_TEXT)
ASSISTANT_HEADER = IM_START + "assistant"
FORMATS = ("messages", "alpaca", "sharegpt", "completion")
MALFORMED_LINES_KEPT = 20  # how many "file:line: reason" entries stats.json lists

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "tool": "tool", "observation": "tool"}


class MalformedRow(ValueError):
    """A row that cannot become a training sample; the message says why."""


# ------------------------------------------------------------------------------------------ row -> messages


def detect_format(row: Any) -> str | None:
    """"messages", "sharegpt", "alpaca" or "completion" by the row's keys; None when it is none of them."""
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "completion"
    return None


def row_to_conversation(row: Any) -> tuple[str, list[dict], list | None]:
    """(format name, OpenAI-style messages, tools or None) for one decoded JSONL row; raises MalformedRow."""
    if not isinstance(row, dict):
        raise MalformedRow("row is not a JSON object")
    tools = row.get("tools")
    if isinstance(tools, str):  # some ShareGPT exports keep the tool list as a JSON string
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise MalformedRow("`tools` is a string that is not JSON") from None
    if tools is not None and not isinstance(tools, list):
        raise MalformedRow("`tools` must be a list")
    fmt = detect_format(row)
    if fmt is None:
        raise MalformedRow("unknown format (expected `messages`, `conversations`, `instruction` + `output`, or "
                           "`prompt` + `completion`)")
    if fmt == "completion":
        raise MalformedRow("a prompt-completion row is not a conversation (see encode_row)")
    if fmt == "messages":
        messages = _openai_messages(row["messages"])
    elif fmt == "sharegpt":
        messages = _sharegpt_messages(row["conversations"], row.get("system"))
    else:
        messages = _alpaca_messages(row)
    _check_conversation(messages)
    _check_no_control_tokens(messages, tools)
    return fmt, messages, tools or None


def _openai_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise MalformedRow("`messages` must be a non-empty list")
    out = []
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise MalformedRow(f"message {number} has no `role`")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            if not all(isinstance(part, dict) and part.get("type") == "text" for part in content):
                raise MalformedRow(f"message {number} has non-text content parts")
            message = {**message, "content": "".join(str(part.get("text", "")) for part in content)}
        elif content is not None and not isinstance(content, str):
            raise MalformedRow(f"message {number}: `content` must be a string")
        out.append(message)
    return out


def _sharegpt_messages(turns: Any, system: Any) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise MalformedRow("`conversations` must be a non-empty list")
    messages = []
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise MalformedRow(f"turn {number} is not an object")
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise MalformedRow(f"turn {number}: unknown `from` {turn.get('from')!r}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise MalformedRow(f"turn {number}: `value` must be a string")
        messages.append({"role": role, "content": value})
    return messages


def _alpaca_messages(row: dict) -> list[dict]:
    instruction, extra, output = row.get("instruction"), row.get("input") or "", row.get("output")
    if not isinstance(instruction, str) or not isinstance(extra, str) or not isinstance(output, str):
        raise MalformedRow("alpaca `instruction`, `input` and `output` must be strings")
    messages = []
    system = row.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    history = row.get("history") or []
    if not isinstance(history, list):
        raise MalformedRow("alpaca `history` must be a list of [instruction, output] pairs")
    for pair in history:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            raise MalformedRow("alpaca `history` must be a list of [instruction, output] pairs")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = instruction + "\n\n" + extra if extra else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return messages


def _check_conversation(messages: list[dict]) -> None:
    roles = [message["role"] for message in messages]
    for number, (role, message) in enumerate(zip(roles, messages)):
        if role not in ("system", "user", "assistant", "tool"):
            raise MalformedRow(f"message {number}: unknown role {role!r}")
        if role == "assistant" and not (message.get("content") or "").strip() and not message.get("tool_calls"):
            raise MalformedRow(f"message {number}: assistant turn with empty content")
    if "assistant" not in roles:
        raise MalformedRow("no assistant turn")


def _check_no_control_tokens(*values: Any) -> None:
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from strings(key)
                yield from strings(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from strings(item)

    for text in strings(values):
        for token in CONTROL_TOKENS:
            if token in text:
                raise MalformedRow(f"text contains the control token {token}")


# --------------------------------------------------------------------------------- rendering and the mask


def assistant_spans(text: str, assistant_count: int) -> list[tuple[int, int]]:
    """Character spans [start, end) of the trained part of each assistant turn in rendered ChatML `text`:
    from just after `<|im_start|>assistant\\n` up to and including the `<|im_end|>` that closes the turn."""
    spans, position = [], 0
    while (header := text.find(ASSISTANT_HEADER, position)) >= 0:
        start = header + len(ASSISTANT_HEADER)
        if not text.startswith("\n", start):  # e.g. an "<|im_start|>assistant_x" role: not an assistant turn
            position = start
            continue
        start += 1
        end = text.find(IM_END, start)
        if end < 0:
            raise MalformedRow("the template left an assistant turn without <|im_end|>")
        spans.append((start, end + len(IM_END)))
        position = end
    if len(spans) != assistant_count:
        raise MalformedRow(f"the template rendered {len(spans)} assistant turns for {assistant_count} assistant "
                           "messages (is it a ChatML template?)")
    return spans


def encode_sample(tokenizer: Tokenizer, messages: list[dict], tools: list | None, template: str,
                  train_on: str = "all") -> tuple[list[int], list[int], str]:
    """(tokens, mask, rendered text) for one conversation; mask is 1 on the trained tokens (see module doc)."""
    try:
        text = render_chat(messages, template=template, tools=tools, add_generation_prompt=False)
    except (ChatTemplateError, ValueError) as error:
        raise MalformedRow(f"template: {error}") from None
    spans = assistant_spans(text, sum(message["role"] == "assistant" for message in messages))
    if train_on == "last":
        spans = spans[-1:]
    pieces, trained, position = [], [], 0
    for start, end in spans:
        pieces += [text[position:start], text[start:end]]
        trained += [False, True]
        position = end
    pieces.append(text[position:])
    trained.append(False)
    tokens, mask = [], []
    for piece, is_trained, ids in zip(pieces, trained, tokenizer.encode_batch(pieces)):
        if piece:
            tokens += ids
            mask += [int(is_trained)] * len(ids)
    return tokens, mask, text


def encode_completion(tokenizer: Tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """(tokens, mask) for a prompt-completion row (see module doc); raises MalformedRow."""
    prompt, completion = row["prompt"], row["completion"]
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise MalformedRow("`prompt` and `completion` must be strings (a conversation goes in `messages`)")
    if not completion.strip():
        raise MalformedRow("empty completion")
    _check_no_control_tokens(prompt, completion)
    prompt_ids, completion_ids = tokenizer.encode_batch([prompt, completion])
    tokens = prompt_ids + completion_ids + [tokenizer.token_to_id(END_OF_TEXT)]
    return tokens, [0] * len(prompt_ids) + [1] * (len(completion_ids) + 1)


def encode_row(tokenizer: Tokenizer, row: Any, template: str,
               train_on: str = "all") -> tuple[str, list[int], list[int]]:
    """(format name, tokens, mask) for one decoded JSONL row of any supported format; raises MalformedRow."""
    fmt = detect_format(row)
    if fmt == "completion":
        return ("completion", *encode_completion(tokenizer, row))
    if fmt is not None and (tokenizer.token_to_id(IM_START) is None or tokenizer.token_to_id(IM_END) is None):
        raise MalformedRow("a conversation needs a ChatML tokenizer (<|im_start|>, <|im_end|>); "
                           "this one only takes prompt-completion rows")
    fmt, messages, tools = row_to_conversation(row)
    tokens, mask, _ = encode_sample(tokenizer, messages, tools, template, train_on)
    return fmt, tokens, mask


# ------------------------------------------------------------------------------------------------ the build


def _read_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, decoded row or None, error or None) per non-blank line of a JSONL (or .jsonl.gz) file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw.decode("utf-8")), None
            except UnicodeDecodeError:
                yield number, None, "not UTF-8"
            except (json.JSONDecodeError, RecursionError) as error:
                yield number, None, f"bad JSON ({getattr(error, 'msg', error)})"


def _split_of(tokens: list[int], seed: int, val_fraction: float, group: str | None = None) -> str:
    key = group.encode() if group is not None else array("I", tokens).tobytes()
    digest = hashlib.blake2b(f"{seed}:".encode() + key, digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "little") / 2**64 < val_fraction else "train"


def build_sft(inputs: list[str | os.PathLike], tokenizer: str | os.PathLike | Tokenizer, out_dir: str | os.PathLike,
              *, template: str | None = None, max_tokens: int = 4096, train_on: str = "all",
              val_fraction: float = 0.01, seed: int = 0, progress: bool = False) -> dict:
    """Turn chat and prompt-completion JSONL files into masked token shards in `out_dir/{train,validation}`;
    returns the stats (also written to `out_dir/stats.json`). `tokenizer` is a folder with tokenizer.json or a
    `Tokenizer`; `template` a built-in name or Jinja source (default: the tokenizer's chat template, else "qwen3")."""
    from zhcoder.data.shards import ShardWriter

    if train_on not in ("all", "last"):
        raise ValueError(f"train_on must be 'all' or 'last', got {train_on!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    paths = [Path(path) for path in inputs]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no such input file: {path}")
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.from_dir(tokenizer)
    if tokenizer.token_to_id(END_OF_TEXT) is None:
        raise ValueError("the tokenizer has no <|endoftext|> token")
    template = template or tokenizer.chat_template or "qwen3"

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").unlink(missing_ok=True)  # a stale report must not outlive a failed rebuild
    stats: dict[str, Any] = {
        "inputs": [str(path) for path in paths], "template": template if len(template) < 40 else "<jinja>",
        "train_on": train_on, "max_tokens": max_tokens, "val_fraction": val_fraction, "seed": seed,
        "rows_read": 0, "kept": 0, "train_samples": 0, "validation_samples": 0, "dropped_too_long": 0, "malformed": 0,
        "malformed_lines": [], "malformed_reasons": {}, "tokens": 0, "trained_tokens": 0,
        "train_tokens": 0, "validation_tokens": 0, "by_format": {fmt: {"read": 0, "kept": 0} for fmt in FORMATS},
    }
    reasons: Counter = Counter()

    def malformed(path: Path, line: int, reason: str) -> None:
        stats["malformed"] += 1
        reasons[re.sub(r"\d+", "N", reason.split(" (")[0])] += 1
        if len(stats["malformed_lines"]) < MALFORMED_LINES_KEPT:
            stats["malformed_lines"].append(f"{path}:{line}: {reason}")

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("SFT rows", total=None)
    writer_args = dict(vocab_size=tokenizer.vocab_size, with_mask=True)
    try:
        with ShardWriter(out, split="train", **writer_args) as train, \
                ShardWriter(out, split="validation", **writer_args) as val:
            writers = {"train": train, "validation": val}
            for path in paths:
                for line, row, error in _read_rows(path):
                    stats["rows_read"] += 1
                    if bar is not None:
                        bar.advance(task)
                    if error is not None:
                        malformed(path, line, error)
                        continue
                    fmt = detect_format(row)
                    if fmt is not None:
                        stats["by_format"][fmt]["read"] += 1
                    try:
                        fmt, tokens, mask = encode_row(tokenizer, row, template, train_on)
                        group = row.get("group")
                        if group is not None and not isinstance(group, str):
                            raise MalformedRow("`group` must be a string")
                    except MalformedRow as problem:
                        malformed(path, line, str(problem))
                        continue
                    if len(tokens) > max_tokens:
                        stats["dropped_too_long"] += 1
                        continue
                    split = _split_of(tokens, seed, val_fraction, group)
                    writers[split].add(tokens, mask=mask)
                    stats["kept"] += 1
                    stats["by_format"][fmt]["kept"] += 1
                    stats[f"{split}_samples"] += 1
                    stats[f"{split}_tokens"] += len(tokens)
                    stats["tokens"] += len(tokens)
                    stats["trained_tokens"] += sum(mask)
    finally:
        if bar is not None:
            bar.stop()
    stats["malformed_reasons"] = dict(reasons.most_common())
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return stats
