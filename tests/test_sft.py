"""SFT data: the loss mask covers exactly the assistant spans, for each input format and chat template, multi-turn
included (checked by decoding the masked tokens); over-length and malformed rows counted; shards readable.

    pytest -q tests/test_sft.py
"""

import json
import re

import pytest

from zhcoder.chat import parse_tool_calls, render_chat
from zhcoder.data.sft import MalformedRow, build_sft, encode_row, encode_sample, row_to_conversation
from zhcoder.tokenizer import Tokenizer

TEMPLATES = ("qwen2.5", "qwen3", "qwen3-coder")
IM_END = "<|im_end|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"  # what Qwen3's template writes before the final answer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.qwen()


# Rows in each input format: multi-turn, with a system prompt, Chinese and code, content with leading newline and
# indentation (where BPE would merge across the header if the text were encoded in one piece).
MESSAGES_ROW = {"messages": [
    {"role": "system", "content": "你是一个编程助手。"},
    {"role": "user", "content": "用 Python 写一个求和函数。"},
    {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
    {"role": "user", "content": "再加上类型注解。"},
    {"role": "assistant", "content": "\n    def add(a: int, b: int) -> int:\n        return a + b"},
]}
ALPACA_ROW = {"instruction": "Reverse a string in Python.", "input": "s = 'hello'", "output": "s[::-1]  # 'olleh'",
              "system": "Answer with code only."}
ALPACA_HISTORY_ROW = {"instruction": "And in Go?", "input": "", "output": "func reverse(s string) string { ... }",
                      "history": [["Reverse a string in Python.", "s[::-1]"]]}
SHAREGPT_ROW = {"conversations": [
    {"from": "system", "value": "You are a careful reviewer."},
    {"from": "human", "value": "Is `x == None` fine?"},
    {"from": "gpt", "value": "Prefer `x is None`."},
    {"from": "human", "value": "Why?"},
    {"from": "gpt", "value": "`==` can be overridden; `is` checks identity.\n"},
]}
NO_SYSTEM_ROW = {"messages": [{"role": "user", "content": "你好吗？"}, {"role": "assistant", "content": "Hello! 你好"}]}

# (row, the user/system texts, the assistant contents in order)
CASES = {
    "messages": (MESSAGES_ROW, ["你是一个编程助手。", "用 Python 写一个求和函数。", "再加上类型注解。"],
                 [MESSAGES_ROW["messages"][2]["content"], MESSAGES_ROW["messages"][4]["content"]]),
    "alpaca": (ALPACA_ROW, ["Answer with code only.", "Reverse a string in Python.\n\ns = 'hello'"],
               [ALPACA_ROW["output"]]),
    "alpaca-history": (ALPACA_HISTORY_ROW, ["Reverse a string in Python.", "And in Go?"],
                       ["s[::-1]", ALPACA_HISTORY_ROW["output"]]),
    "sharegpt": (SHAREGPT_ROW, ["You are a careful reviewer.", "Is `x == None` fine?", "Why?"],
                 ["Prefer `x is None`.", SHAREGPT_ROW["conversations"][4]["value"]]),
    "no-system": (NO_SYSTEM_ROW, ["你好吗？"], ["Hello! 你好"]),
}


def masked_runs(tokenizer, tokens, mask):
    """Decoded text of each maximal run of masked tokens, and of the unmasked tokens joined."""
    runs, current, unmasked = [], [], []
    for token, flag in zip(tokens, mask):
        if flag:
            current.append(token)
        else:
            unmasked.append(token)
            if current:
                runs.append(tokenizer.decode(current))
                current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs, tokenizer.decode(unmasked)


def expected_spans(contents, template, last_only=False):
    """Our convention: content + <|im_end|> per assistant turn. Qwen3 writes an empty think block before the last
    turn's content, whose leading newlines its template strips."""
    spans = [content + IM_END for content in contents]
    if template == "qwen3":
        spans[-1] = EMPTY_THINK + spans[-1].lstrip("\n")
    return spans[-1:] if last_only else spans


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("train_on", ["all", "last"])
def test_mask_is_exactly_the_assistant_spans(tokenizer, template, case, train_on):
    row, prompt_texts, contents = CASES[case]
    fmt, messages, tools = row_to_conversation(row)
    assert fmt == case.split("-")[0] if case != "no-system" else fmt == "messages"
    tokens, mask, text = encode_sample(tokenizer, messages, tools, template, train_on)
    assert len(tokens) == len(mask) and set(mask) <= {0, 1}
    assert tokenizer.decode(tokens) == text == render_chat(messages, template=template, add_generation_prompt=False)
    runs, unmasked = masked_runs(tokenizer, tokens, mask)
    assert runs == expected_spans(contents, template, last_only=train_on == "last")
    # No user or system text is trained: all of it is in the unmasked tokens, none in the masked ones.
    for prompt in prompt_texts:
        assert prompt in unmasked
        assert all(prompt not in run for run in runs)
    # The headers and the newline after each <|im_end|> are not trained.
    assert all(not run.startswith("<|im_start|>") and not run.endswith(IM_END + "\n") for run in runs)
    if template == "qwen2.5" and case == "no-system":  # the template's default system prompt stays context
        assert "You are Qwen, created by Alibaba Cloud." in unmasked


@pytest.mark.parametrize("template", ["qwen2.5", "qwen3"])
def test_earlier_think_blocks_and_reasoning(tokenizer, template):
    """Qwen3 drops an earlier turn's reasoning but shows the final turn's: the mask follows the rendering."""
    messages = [{"role": "user", "content": "1+1?"},
                {"role": "assistant", "content": "2", "reasoning_content": "one plus one"},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "two plus two"}]
    tokens, mask, _ = encode_sample(tokenizer, messages, None, template)
    runs, unmasked = masked_runs(tokenizer, tokens, mask)
    if template == "qwen3":
        assert runs == ["2" + IM_END, "<think>\ntwo plus two\n</think>\n\n4" + IM_END]
        assert "one plus one" not in unmasked  # not rendered at all
    else:
        assert runs == ["2" + IM_END, "4" + IM_END]


@pytest.mark.parametrize("template", TEMPLATES)
def test_tool_calls_are_trained_tool_results_are_not(tokenizer, template):
    weather = {"type": "function", "function": {"name": "get_weather", "description": "天气",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    row = {"tools": [weather], "messages": [
        {"role": "user", "content": "杭州天气？"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "杭州"}'}}]},
        {"role": "tool", "content": "晴，25°C"},
        {"role": "assistant", "content": "杭州今天晴，25°C。"}]}
    _, messages, tools = row_to_conversation(row)
    tokens, mask, _ = encode_sample(tokenizer, messages, tools, template)
    runs, unmasked = masked_runs(tokenizer, tokens, mask)
    assert len(runs) == 2 and all(run.endswith(IM_END) for run in runs)
    call = parse_tool_calls(runs[0][: -len(IM_END)], tools=tools)
    assert [(c.name, c.arguments) for c in call.tool_calls] == [("get_weather", {"city": "杭州"})]
    assert runs[1].removeprefix(EMPTY_THINK if template == "qwen3" else "") == "杭州今天晴，25°C。" + IM_END
    assert "晴，25°C" in unmasked and "get_weather" in unmasked  # tool result and tool list are context


@pytest.mark.parametrize("row, reason", [
    ({"text": "pretraining text"}, "unknown format"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}, "empty content"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "bot9", "value": "a"}]}, "unknown `from`"),
    ({"instruction": "q", "output": "a <|im_end|> b"}, "control token"),
    ([1, 2], "not a JSON object"),
])
def test_malformed_rows_are_refused(row, reason):
    with pytest.raises(MalformedRow, match=reason):
        row_to_conversation(row)


def test_build_sft_end_to_end(tokenizer, tmp_path):
    from zhcoder.data.shards import TokenDataset

    long_row = {"messages": [{"role": "user", "content": "long"}, {"role": "assistant", "content": "word " * 300}]}
    chat = tmp_path / "chat.jsonl"
    lines = [json.dumps(MESSAGES_ROW, ensure_ascii=False),     # 1
             "{not json",                                       # 2 malformed
             json.dumps(long_row),                              # 3 too long
             "",                                                # 4 blank: not a row
             json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}),  # 5
             json.dumps(NO_SYSTEM_ROW, ensure_ascii=False)]     # 6
    chat.write_text("\n".join(lines) + "\n", encoding="utf-8")
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_bytes(json.dumps(ALPACA_ROW).encode() + b"\n" + b'{"instruction": "\xff\xfe"}\n'
                       + json.dumps({"prompt": "x", "answer": "y"}).encode() + b"\n"
                       + json.dumps(ALPACA_HISTORY_ROW).encode() + b"\n")
    sharegpt = tmp_path / "sharegpt.jsonl"
    sharegpt.write_text(json.dumps(SHAREGPT_ROW) + "\n", encoding="utf-8")

    out = tmp_path / "out"
    stats = build_sft([chat, alpaca, sharegpt], tokenizer, out, max_tokens=200, val_fraction=0.3, seed=1)
    assert stats == json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["template"] == "qwen3"  # the tokenizer has no template of its own
    assert stats["rows_read"] == 10 and stats["kept"] == 5 and stats["dropped_too_long"] == 1
    assert stats["malformed"] == 4
    assert [entry.split(": ")[0] for entry in stats["malformed_lines"]] == [
        f"{chat}:2", f"{chat}:5", f"{alpaca}:2", f"{alpaca}:3"]
    assert stats["by_format"] == {"messages": {"read": 4, "kept": 2}, "alpaca": {"read": 2, "kept": 2},
                                  "sharegpt": {"read": 1, "kept": 1}, "completion": {"read": 0, "kept": 0}}
    assert stats["train_samples"] + stats["validation_samples"] == 5

    # Every kept sample comes back from the shards with its mask aligned; masked tokens are the assistant spans.
    expected = {}
    for case in ("messages", "no-system", "alpaca", "alpaca-history", "sharegpt"):
        row, _, contents = CASES[case]
        _, messages, _ = row_to_conversation(row)
        text = render_chat(messages, template="qwen3", add_generation_prompt=False)
        expected[text] = expected_spans(contents, "qwen3")
    found, tokens_total, trained_total = {}, 0, 0
    for split in ("train", "validation"):
        dataset = TokenDataset(out / split)
        assert len(dataset) == stats[f"{split}_samples"]
        for index in range(len(dataset)):
            tokens, mask = dataset[index]
            assert mask is not None and len(mask) == len(tokens)
            tokens, mask = [int(t) for t in tokens], [int(m) for m in mask]
            found[tokenizer.decode(tokens)] = masked_runs(tokenizer, tokens, mask)[0]
            tokens_total += len(tokens)
            trained_total += sum(mask)
    assert found == expected
    assert (tokens_total, trained_total) == (stats["tokens"], stats["trained_tokens"])


COMPLETION_ROW = {"prompt": 'def 求和(a, b):\n    """返回 a 与 b 的和。"""\n', "completion": "    return a + b\n"}


def test_prompt_completion_rows_train_the_completion_and_the_stop(tokenizer, tmp_path):
    """A `prompt` + `completion` row is plain text, no template: the prompt tokenised as inference encodes it, the
    completion after it, then <|endoftext|>; only the completion and <|endoftext|> are trained."""
    from zhcoder.data.shards import TokenDataset

    fmt, tokens, mask = encode_row(tokenizer, COMPLETION_ROW, "qwen3")
    prompt_ids = tokenizer.encode(COMPLETION_ROW["prompt"])
    assert fmt == "completion" and tokens[:len(prompt_ids)] == prompt_ids and not any(mask[:len(prompt_ids)])
    assert all(mask[len(prompt_ids):]) and tokens[-1] in tokenizer.stop_token_ids      # where generation stops
    assert tokenizer.decode(tokens[len(prompt_ids):]) == COMPLETION_ROW["completion"] + "<|endoftext|>"

    source = tmp_path / "completions.jsonl"
    rows = [COMPLETION_ROW, {"prompt": "", "completion": "import os\n"}, {"prompt": "x = ", "completion": "  \n"},
            {"prompt": "x", "completion": "<|im_end|>"}, {"prompt": 1, "completion": "y"}]
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    stats = build_sft([source], tokenizer, tmp_path / "out", val_fraction=0.0)
    assert stats["by_format"]["completion"] == {"read": 5, "kept": 2} and stats["malformed"] == 3
    assert [line.split(": ", 1)[1] for line in stats["malformed_lines"]] == [
        "empty completion", "text contains the control token <|im_end|>",
        "`prompt` and `completion` must be strings (a conversation goes in `messages`)"]
    dataset = TokenDataset(tmp_path / "out" / "train")
    assert [[int(t) for t in dataset[i][0]] for i in range(len(dataset))] == [
        tokens, tokenizer.encode("import os\n") + [tokenizer.token_to_id("<|endoftext|>")]]
    assert stats["trained_tokens"] == sum(mask) + len(tokenizer.encode("import os\n")) + 1


def test_a_tokenizer_without_chatml_takes_completion_rows_only(tmp_path):
    """Completion-only data needs no chat template: a byte-level tokenizer with <|endoftext|> but no ChatML tokens
    builds prompt-completion rows, and counts each conversation row as malformed, with the reason."""
    import tokenizers

    from zhcoder.data.shards import TokenDataset
    from zhcoder.tokenizer import ranks_tokenizer_json

    ranks = {bytes([byte]): byte for byte in range(256)}
    plain = Tokenizer(tokenizers.Tokenizer.from_str(ranks_tokenizer_json(ranks, [(256, "<|endoftext|>", True)])),
                      eos_token="<|endoftext|>")
    source = tmp_path / "mixed.jsonl"
    source.write_text(json.dumps(COMPLETION_ROW) + "\n" + json.dumps(ALPACA_ROW) + "\n", encoding="utf-8")
    stats = build_sft([source], plain, tmp_path / "out", val_fraction=0.0)
    assert stats["by_format"]["completion"] == {"read": 1, "kept": 1} and stats["by_format"]["alpaca"]["kept"] == 0
    assert stats["malformed_lines"] == [f"{source}:2: a conversation needs a ChatML tokenizer (<|im_start|>, "
                                        "<|im_end|>); this one only takes prompt-completion rows"]
    tokens, mask = TokenDataset(tmp_path / "out" / "train")[0]
    assert plain.decode([int(t) for t, m in zip(tokens, mask) if m]) == COMPLETION_ROW["completion"] + "<|endoftext|>"


def test_rows_of_one_group_land_in_one_split(tokenizer, tmp_path):
    """Rows sharing a `group` (e.g. a chat pair and completions made from one function) go to the same split, so
    validation never scores text whose twin was trained on; a non-string group is refused."""
    from zhcoder.data.shards import TokenDataset

    rows = []
    for number in range(40):
        body = f"    return x * {number} + {number * number}\n"
        rows += [{"prompt": f"def f{number}(x):\n", "completion": body, "group": f"g{number}"},
                 {"prompt": "", "completion": f"def f{number}(x):\n{body}", "group": f"g{number}"},
                 {"instruction": f"Write f{number}.", "output": f"def f{number}(x):\n{body}", "group": f"g{number}"}]
    rows.append({"prompt": "x", "completion": "y", "group": 7})
    source = tmp_path / "grouped.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    stats = build_sft([source], tokenizer, tmp_path / "out", val_fraction=0.3)
    assert stats["kept"] == 120 and stats["malformed_lines"][0].endswith("`group` must be a string")
    splits = {}
    for split in ("train", "validation"):
        dataset = TokenDataset(tmp_path / "out" / split)
        for index in range(len(dataset)):
            name = re.search(r"def (f\d+)", tokenizer.decode([int(t) for t in dataset[index][0]])).group(1)
            splits.setdefault(name, set()).add(split)
    assert len(splits) == 40 and all(len(found) == 1 for found in splits.values())
    assert 0 < stats["validation_samples"] < 120 and stats["validation_samples"] % 3 == 0


def test_build_sft_train_on_last_and_determinism(tokenizer, tmp_path):
    from zhcoder.data.shards import TokenDataset

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(SHAREGPT_ROW) + "\n", encoding="utf-8")
    stats = build_sft([source], tokenizer, tmp_path / "a", template="qwen2.5", train_on="last", val_fraction=0.0)
    assert stats["kept"] == stats["train_samples"] == 1
    tokens, mask = TokenDataset(tmp_path / "a" / "train")[0]
    runs, _ = masked_runs(tokenizer, [int(t) for t in tokens], [int(m) for m in mask])
    assert runs == [SHAREGPT_ROW["conversations"][4]["value"] + IM_END]
    again = build_sft([source], tokenizer, tmp_path / "b", template="qwen2.5", train_on="last", val_fraction=0.0)
    assert {k: v for k, v in again.items() if k != "inputs"} == {k: v for k, v in stats.items() if k != "inputs"}


def test_user_errors(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such input file"):
        build_sft([tmp_path / "missing.jsonl"], tokenizer, tmp_path / "out")
    with pytest.raises(ValueError, match="train_on"):
        build_sft([], tokenizer, tmp_path / "out", train_on="first")


def test_mask_matches_transformers_generation_tag(tokenizer, tmp_path):
    """Peer check: transformers' `return_assistant_tokens_mask` with a ChatML template whose `{% generation %}`
    wraps content + <|im_end|> gives the same ids and the same mask."""
    transformers = pytest.importorskip("transformers")
    template = ("{%- for message in messages %}{%- if message.role == 'assistant' %}"
                "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- message.content + '<|im_end|>' }}"
                "{%- endgeneration %}{{- '\\n' }}{%- else %}"
                "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
                "{%- endif %}{%- endfor %}")
    tokenizer.save(tmp_path, chat_template=template)
    peer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    _, messages, _ = row_to_conversation(SHAREGPT_ROW)
    messages[2]["content"] = "写代码：\ndef f():\n    return 1"
    reference = peer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    tokens, mask, _ = encode_sample(tokenizer, messages, None, template)
    assert tokens == list(reference["input_ids"])
    assert mask == list(reference["assistant_masks"]) and sum(mask) > 0
