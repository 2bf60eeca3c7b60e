"""Prompt formats: chat templates against Qwen's published output, parity with transformers, FIM and repo-level
strings, and the tool-call parser on well-formed and malformed replies.

    pytest -q tests/test_chat.py

Expected prompts below are the text Qwen's own chat templates produce for these conversations (Qwen2.5-Instruct /
Qwen2.5-Coder-Instruct, Qwen3, Qwen3-Coder-30B-A3B-Instruct), written out literally.
"""

import json

import pytest

from zhcoder.chat import (
    BUILTIN_TEMPLATES,
    ChatTemplateError,
    ParsedReply,
    ToolCall,
    builtin_template,
    fim_prompt,
    parse_tool_calls,
    render_chat,
    repo_prompt,
)

# ------------------------------------------------------------------------------------------- conversations

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "查询城市的天气预报",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "城市名，例如 杭州"},
                "days": {"type": "integer", "description": "预报天数"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
RUN_TESTS = {
    "type": "function",
    "function": {
        "name": "run_tests",
        "description": "Run the test suite.\n",
        "parameters": {
            "type": "object",
            "properties": {
                "paths": {"type": "array", "items": {"type": "string"}, "description": "test files"},
                "verbose": {"type": "boolean", "default": False},
                "env": {"type": "object"},
                "timeout": {"type": ["number", "null"]},
            },
            "required": ["paths"],
        },
        "strict": True,
    },
}
PLAIN = [{"role": "user", "content": "写一个快速排序函数。"}]
WITH_SYSTEM = [
    {"role": "system", "content": "You are a careful code reviewer."},
    {"role": "user", "content": "Is `x == None` fine?"},
    {"role": "assistant", "content": "Prefer `x is None`."},
    {"role": "user", "content": "为什么？"},
]
TOOL_ROUND = [
    {"role": "user", "content": "杭州和北京明天天气怎么样？"},
    {"role": "assistant", "content": "我来查一下。", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "杭州", "days": 1}}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京", "days": 1}}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "晴，25°C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "多云，18°C"},
]
THINKING = [
    {"role": "user", "content": "1+1=?"},
    {"role": "assistant", "content": "2", "reasoning_content": "Simple addition."},
    {"role": "user", "content": "再乘以3呢？"},
    {"role": "assistant", "content": "<think>\n2 乘以 3 得 6。\n</think>\n\n6"},
]
AGENT_LOOP = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "Run the tests in tests/test_a.py."},
    {"role": "assistant", "content": "", "reasoning_content": "Call the tool.", "tool_calls": [
        {"type": "function", "function": {"name": "run_tests", "arguments": {
            "paths": ["tests/test_a.py"], "verbose": True, "env": {"CI": "1"}, "timeout": 30}}}]},
    {"role": "tool", "content": "1 passed"},
    {"role": "assistant", "content": "All tests pass.", "reasoning_content": "Report it."},
]

# ------------------------------------------------------------------------ Qwen's text, written out literally

QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Qwen2.5 and Qwen3 list tools as JSON lines between these two blocks.
JSON_TOOLS_HEAD = (
    '# Tools\n'
    '\n'
    'You may call one or more functions to assist with the user query.\n'
    '\n'
    'You are provided with function signatures within <tools></tools> XML tags:\n'
    '<tools>\n'
)
JSON_TOOLS_TAIL = (
    '</tools>\n'
    '\n'
    'For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n'
    '<tool_call>\n'
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    '</tool_call><|im_end|>\n'
)
WEATHER_JSON = (
    '{"type": "function", "function": {"name": "get_weather", "description": "查询城市的天气预报", "parameters": '
    '{"type": "object", "properties": {"city": {"type": "string", "description": "城市名，例如 杭州"}, "days": '
    '{"type": "integer", "description": "预报天数"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, '
    '"required": ["city"]}}}\n'
)
RUN_TESTS_JSON = (
    '{"type": "function", "function": {"name": "run_tests", "description": "Run the test suite.\\n", "parameters": '
    '{"type": "object", "properties": {"paths": {"type": "array", "items": {"type": "string"}, "description": '
    '"test files"}, "verbose": {"type": "boolean", "default": false}, "env": {"type": "object"}, "timeout": '
    '{"type": ["number", "null"]}}, "required": ["paths"]}, "strict": true}}\n'
)
# Qwen3-Coder: the XML tool manifest sits between these two blocks.
CODER_TOOLS_HEAD = (
    '\n'
    '\n'
    '# Tools\n'
    '\n'
    'You have access to the following functions:\n'
    '\n'
    '<tools>\n'
)
CODER_TOOLS_TAIL = (
    '</tools>\n'
    '\n'
    'If you choose to call a function ONLY reply in the following format with NO suffix:\n'
    '\n'
    '<tool_call>\n'
    '<function=example_function_name>\n'
    '<parameter=example_parameter_1>\n'
    'value_1\n'
    '</parameter>\n'
    '<parameter=example_parameter_2>\n'
    'This is the value for the second parameter\n'
    'that can span\n'
    'multiple lines\n'
    '</parameter>\n'
    '</function>\n'
    '</tool_call>\n'
    '\n'
    '<IMPORTANT>\n'
    'Reminder:\n'
    '- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n'
    '- Required parameters MUST be specified\n'
    '- You may provide optional reasoning for your function call in natural language BEFORE the function call, but NOT after\n'
    '- If there is no function call available, answer the question like normal with your current knowledge and do not tell the user about function calls\n'
    '</IMPORTANT><|im_end|>\n'
)
WEATHER_XML = (
    '<function>\n'
    '<name>get_weather</name>\n'
    '<description>查询城市的天气预报</description>\n'
    '<parameters>\n'
    '<parameter>\n'
    '<name>city</name>\n'
    '<type>string</type>\n'
    '<description>城市名，例如 杭州</description>\n'
    '</parameter>\n'
    '<parameter>\n'
    '<name>days</name>\n'
    '<type>integer</type>\n'
    '<description>预报天数</description>\n'
    '</parameter>\n'
    '<parameter>\n'
    '<name>unit</name>\n'
    '<type>string</type>\n'
    '<enum>["celsius", "fahrenheit"]</enum>\n'
    '</parameter>\n'
    '<required>["city"]</required>\n'
    '</parameters>\n'
    '</function>\n'
)
RUN_TESTS_XML = (
    '<function>\n'
    '<name>run_tests</name>\n'
    '<description>Run the test suite.</description>\n'
    '<parameters>\n'
    '<parameter>\n'
    '<name>paths</name>\n'
    '<type>array</type>\n'
    '<description>test files</description>\n'
    '<items>{"type": "string"}</items>\n'
    '</parameter>\n'
    '<parameter>\n'
    '<name>verbose</name>\n'
    '<type>boolean</type>\n'
    '<default>False</default>\n'
    '</parameter>\n'
    '<parameter>\n'
    '<name>env</name>\n'
    '<type>object</type>\n'
    '</parameter>\n'
    '<parameter>\n'
    '<name>timeout</name>\n'
    "<type>['number', 'null']</type>\n"
    '</parameter>\n'
    '<required>["paths"]</required>\n'
    '</parameters>\n'
    '<strict>True</strict>\n'
    '</function>\n'
)

# (id, template, messages, tools, add_generation_prompt, enable_thinking, expected)
CASES = [
    ("qwen2.5-plain", "qwen2.5", PLAIN, None, True, True, (
        '<|im_start|>system\n'
        'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n'
        '<|im_start|>user\n'
        '写一个快速排序函数。<|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    ("qwen2.5-system", "qwen2.5", WITH_SYSTEM, None, True, True, (
        '<|im_start|>system\n'
        'You are a careful code reviewer.<|im_end|>\n'
        '<|im_start|>user\n'
        'Is `x == None` fine?<|im_end|>\n'
        '<|im_start|>assistant\n'
        'Prefer `x is None`.<|im_end|>\n'
        '<|im_start|>user\n'
        '为什么？<|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    ("qwen2.5-tools", "qwen2.5", TOOL_ROUND, [WEATHER], True, True, (
        '<|im_start|>system\n'
        'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n'
        '\n'
        + JSON_TOOLS_HEAD + WEATHER_JSON + JSON_TOOLS_TAIL +
        '<|im_start|>user\n'
        '杭州和北京明天天气怎么样？<|im_end|>\n'
        '<|im_start|>assistant\n'
        '我来查一下。\n'
        '<tool_call>\n'
        '{"name": "get_weather", "arguments": {"city": "杭州", "days": 1}}\n'
        '</tool_call>\n'
        '<tool_call>\n'
        '{"name": "get_weather", "arguments": {"city": "北京", "days": 1}}\n'
        '</tool_call><|im_end|>\n'
        '<|im_start|>user\n'
        '<tool_response>\n'
        '晴，25°C\n'
        '</tool_response>\n'
        '<tool_response>\n'
        '多云，18°C\n'
        '</tool_response><|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    ("qwen2.5-agent", "qwen2.5", AGENT_LOOP, [RUN_TESTS], False, True, (
        '<|im_start|>system\n'
        'You are a coding agent.\n'
        '\n'
        + JSON_TOOLS_HEAD + RUN_TESTS_JSON + JSON_TOOLS_TAIL +
        '<|im_start|>user\n'
        'Run the tests in tests/test_a.py.<|im_end|>\n'
        '<|im_start|>assistant\n'
        '<tool_call>\n'
        '{"name": "run_tests", "arguments": {"paths": ["tests/test_a.py"], "verbose": true, "env": {"CI": "1"}, "timeout": 30}}\n'
        '</tool_call><|im_end|>\n'
        '<|im_start|>user\n'
        '<tool_response>\n'
        '1 passed\n'
        '</tool_response><|im_end|>\n'
        '<|im_start|>assistant\n'
        'All tests pass.<|im_end|>\n'
    )),
    ("qwen3-plain", "qwen3", PLAIN, None, True, True, (
        '<|im_start|>user\n'
        '写一个快速排序函数。<|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    ("qwen3-plain-nothink", "qwen3", PLAIN, None, True, False, (
        '<|im_start|>user\n'
        '写一个快速排序函数。<|im_end|>\n'
        '<|im_start|>assistant\n'
        '<think>\n'
        '\n'
        '</think>\n'
        '\n'
    )),
    ("qwen3-system", "qwen3", WITH_SYSTEM, None, True, True, (
        '<|im_start|>system\n'
        'You are a careful code reviewer.<|im_end|>\n'
        '<|im_start|>user\n'
        'Is `x == None` fine?<|im_end|>\n'
        '<|im_start|>assistant\n'
        'Prefer `x is None`.<|im_end|>\n'
        '<|im_start|>user\n'
        '为什么？<|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    ("qwen3-tools", "qwen3", TOOL_ROUND, [WEATHER], True, True, (
        '<|im_start|>system\n'
        + JSON_TOOLS_HEAD + WEATHER_JSON + JSON_TOOLS_TAIL +
        '<|im_start|>user\n'
        '杭州和北京明天天气怎么样？<|im_end|>\n'
        '<|im_start|>assistant\n'
        '我来查一下。\n'
        '<tool_call>\n'
        '{"name": "get_weather", "arguments": {"city": "杭州", "days": 1}}\n'
        '</tool_call>\n'
        '<tool_call>\n'
        '{"name": "get_weather", "arguments": {"city": "北京", "days": 1}}\n'
        '</tool_call><|im_end|>\n'
        '<|im_start|>user\n'
        '<tool_response>\n'
        '晴，25°C\n'
        '</tool_response>\n'
        '<tool_response>\n'
        '多云，18°C\n'
        '</tool_response><|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    # Reasoning before the last user query is dropped; the final turn shows its <think> block.
    ("qwen3-thinking", "qwen3", THINKING, None, False, True, (
        '<|im_start|>user\n'
        '1+1=?<|im_end|>\n'
        '<|im_start|>assistant\n'
        '2<|im_end|>\n'
        '<|im_start|>user\n'
        '再乘以3呢？<|im_end|>\n'
        '<|im_start|>assistant\n'
        '<think>\n'
        '2 乘以 3 得 6。\n'
        '</think>\n'
        '\n'
        '6<|im_end|>\n'
    )),
    # The final assistant turn after the query always gets a think block, empty when it has no reasoning.
    ("qwen3-empty-think", "qwen3", WITH_SYSTEM + [{"role": "assistant", "content": "`==` 会调用 `__eq__`，可能被重载。"}],
     None, False, True, (
        '<|im_start|>system\n'
        'You are a careful code reviewer.<|im_end|>\n'
        '<|im_start|>user\n'
        'Is `x == None` fine?<|im_end|>\n'
        '<|im_start|>assistant\n'
        'Prefer `x is None`.<|im_end|>\n'
        '<|im_start|>user\n'
        '为什么？<|im_end|>\n'
        '<|im_start|>assistant\n'
        '<think>\n'
        '\n'
        '</think>\n'
        '\n'
        '`==` 会调用 `__eq__`，可能被重载。<|im_end|>\n'
    )),
    # Tool results do not count as a new query, so both assistant turns keep their reasoning.
    ("qwen3-agent", "qwen3", AGENT_LOOP, [RUN_TESTS], False, True, (
        '<|im_start|>system\n'
        'You are a coding agent.\n'
        '\n'
        + JSON_TOOLS_HEAD + RUN_TESTS_JSON + JSON_TOOLS_TAIL +
        '<|im_start|>user\n'
        'Run the tests in tests/test_a.py.<|im_end|>\n'
        '<|im_start|>assistant\n'
        '<think>\n'
        'Call the tool.\n'
        '</think>\n'
        '\n'
        '<tool_call>\n'
        '{"name": "run_tests", "arguments": {"paths": ["tests/test_a.py"], "verbose": true, "env": {"CI": "1"}, "timeout": 30}}\n'
        '</tool_call><|im_end|>\n'
        '<|im_start|>user\n'
        '<tool_response>\n'
        '1 passed\n'
        '</tool_response><|im_end|>\n'
        '<|im_start|>assistant\n'
        '<think>\n'
        'Report it.\n'
        '</think>\n'
        '\n'
        'All tests pass.<|im_end|>\n'
    )),
    ("qwen3-coder-plain", "qwen3-coder", PLAIN, None, True, True, (
        '<|im_start|>user\n'
        '写一个快速排序函数。<|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    ("qwen3-coder-system", "qwen3-coder", WITH_SYSTEM, None, True, True, (
        '<|im_start|>system\n'
        'You are a careful code reviewer.<|im_end|>\n'
        '<|im_start|>user\n'
        'Is `x == None` fine?<|im_end|>\n'
        '<|im_start|>assistant\n'
        'Prefer `x is None`.<|im_end|>\n'
        '<|im_start|>user\n'
        '为什么？<|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    ("qwen3-coder-tools", "qwen3-coder", TOOL_ROUND, [WEATHER], True, True, (
        '<|im_start|>system\n'
        'You are Qwen, a helpful AI assistant that can interact with a computer to solve tasks.'
        + CODER_TOOLS_HEAD + WEATHER_XML + CODER_TOOLS_TAIL +
        '<|im_start|>user\n'
        '杭州和北京明天天气怎么样？<|im_end|>\n'
        '<|im_start|>assistant\n'
        '我来查一下。\n'
        '\n'
        '<tool_call>\n'
        '<function=get_weather>\n'
        '<parameter=city>\n'
        '杭州\n'
        '</parameter>\n'
        '<parameter=days>\n'
        '1\n'
        '</parameter>\n'
        '</function>\n'
        '</tool_call>\n'
        '<tool_call>\n'
        '<function=get_weather>\n'
        '<parameter=city>\n'
        '北京\n'
        '</parameter>\n'
        '<parameter=days>\n'
        '1\n'
        '</parameter>\n'
        '</function>\n'
        '</tool_call><|im_end|>\n'
        '<|im_start|>user\n'
        '<tool_response>\n'
        '晴，25°C\n'
        '</tool_response>\n'
        '<tool_response>\n'
        '多云，18°C\n'
        '</tool_response>\n'
        '<|im_end|>\n'
        '<|im_start|>assistant\n'
    )),
    # Non-string argument values go through Python's str() (True), lists and objects through tojson.
    ("qwen3-coder-agent", "qwen3-coder", AGENT_LOOP, [RUN_TESTS, WEATHER], False, True, (
        '<|im_start|>system\n'
        'You are a coding agent.'
        + CODER_TOOLS_HEAD + RUN_TESTS_XML + WEATHER_XML + CODER_TOOLS_TAIL +
        '<|im_start|>user\n'
        'Run the tests in tests/test_a.py.<|im_end|>\n'
        '<|im_start|>assistant\n'
        '<tool_call>\n'
        '<function=run_tests>\n'
        '<parameter=paths>\n'
        '["tests/test_a.py"]\n'
        '</parameter>\n'
        '<parameter=verbose>\n'
        'True\n'
        '</parameter>\n'
        '<parameter=env>\n'
        '{"CI": "1"}\n'
        '</parameter>\n'
        '<parameter=timeout>\n'
        '30\n'
        '</parameter>\n'
        '</function>\n'
        '</tool_call><|im_end|>\n'
        '<|im_start|>user\n'
        '<tool_response>\n'
        '1 passed\n'
        '</tool_response>\n'
        '<|im_end|>\n'
        '<|im_start|>assistant\n'
        'All tests pass.<|im_end|>\n'
    )),
]
CASE_IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("case_id, template, messages, tools, add_generation_prompt, think, expected", CASES,
                         ids=CASE_IDS)
def test_builtin_templates_render_qwens_text(case_id, template, messages, tools, add_generation_prompt, think,
                                             expected):
    rendered = render_chat(messages, template=template, tools=tools, add_generation_prompt=add_generation_prompt,
                           enable_thinking=think)
    assert rendered == expected


def test_qwen3_default_is_thinking_on_and_default_template():
    assert render_chat(PLAIN) == render_chat(PLAIN, template="qwen3", enable_thinking=True)
    assert render_chat(PLAIN).endswith("<|im_start|>assistant\n")
    assert render_chat(PLAIN, enable_thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # Only Qwen3 has a thinking switch.
    for name in ("qwen2.5", "qwen3-coder"):
        assert render_chat(PLAIN, template=name, enable_thinking=False) == render_chat(PLAIN, template=name)


# ------------------------------------------------------------------------------- parity with transformers

def _tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")


OPENAI_STYLE = [  # what an OpenAI client sends back: content None next to tool calls, `reasoning` as vLLM names it
    {"role": "user", "content": "杭州呢？"},
    {"role": "assistant", "content": None, "reasoning": "查天气。", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "杭州"}}}]},
    {"role": "tool", "tool_call_id": "call_9", "content": "{\"温度\": 25}"},
]
PARITY = [case[:6] for case in CASES] + [
    (f"{name}-openai-style", name, OPENAI_STYLE, [WEATHER], True, True) for name in BUILTIN_TEMPLATES
] + [("qwen3-openai-style-nothink", "qwen3", OPENAI_STYLE, [WEATHER], True, False)]


@pytest.mark.parametrize("case_id, template, messages, tools, add_generation_prompt, think", PARITY,
                         ids=[case[0] for case in PARITY])
def test_transformers_apply_chat_template_gives_the_same_text(case_id, template, messages, tools,
                                                              add_generation_prompt, think):
    tokenizer = _tiny_tokenizer()
    theirs = tokenizer.apply_chat_template(messages, tools=tools, chat_template=builtin_template(template),
                                           add_generation_prompt=add_generation_prompt, tokenize=False,
                                           enable_thinking=think)
    ours = render_chat(messages, template=template, tools=tools, add_generation_prompt=add_generation_prompt,
                       enable_thinking=think)
    assert theirs == ours


def test_openai_style_reply_renders_reasoning_and_drops_none_content():
    rendered = render_chat(OPENAI_STYLE, template="qwen3", tools=[WEATHER])
    assert rendered.endswith(
        '<|im_start|>user\n杭州呢？<|im_end|>\n'
        '<|im_start|>assistant\n<think>\n查天气。\n</think>\n\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "杭州"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"温度": 25}\n</tool_response><|im_end|>\n'
        '<|im_start|>assistant\n')


def test_tokenizer_config_carrying_our_template_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer = _tiny_tokenizer()
    tokenizer.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
        "chat_template": builtin_template("qwen3-coder")}, ensure_ascii=False), encoding="utf-8")
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    theirs = loaded.apply_chat_template(TOOL_ROUND, tools=[WEATHER], add_generation_prompt=True, tokenize=False)
    assert theirs == render_chat(TOOL_ROUND, template="qwen3-coder", tools=[WEATHER])


# ------------------------------------------------------------------------------------ render_chat behaviour

def _with_string_arguments(messages):
    converted = json.loads(json.dumps(messages))
    for message in converted:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    return converted


@pytest.mark.parametrize("template", BUILTIN_TEMPLATES)
def test_json_string_arguments_render_like_dicts(template):
    as_strings = _with_string_arguments(AGENT_LOOP)
    assert isinstance(as_strings[2]["tool_calls"][0]["function"]["arguments"], str)
    assert (render_chat(as_strings, template=template, tools=[RUN_TESTS])
            == render_chat(AGENT_LOOP, template=template, tools=[RUN_TESTS]))
    assert isinstance(AGENT_LOOP[2]["tool_calls"][0]["function"]["arguments"], dict)  # caller's data untouched


@pytest.mark.parametrize("arguments", ['{"city": 杭州}', '["杭州"]'])
def test_bad_string_arguments_are_a_clear_error(arguments):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": arguments}}]}]
    with pytest.raises(ValueError, match="get_weather"):
        render_chat(messages, template="qwen3")


def test_template_names_and_sources():
    with pytest.raises(ValueError, match="qwen2.5, qwen3, qwen3-coder"):
        builtin_template("llama3")
    with pytest.raises(ValueError, match="qwen2.5, qwen3, qwen3-coder"):
        render_chat(PLAIN, template="qwen3.5")
    for name in BUILTIN_TEMPLATES:
        assert "{%" in builtin_template(name)
    # A checkpoint's own template, with extra variables as transformers passes them.
    source = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    assert render_chat(PLAIN, template=source, bos_token="<s>") == "<s>[user] 写一个快速排序函数。\n"
    # transformers' {% generation %} marker (assistant masks) renders its body.
    marked = "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    assert render_chat(PLAIN, template=marked) == "写一个快速排序函数。"


def test_template_errors_are_value_errors():
    strict = "{% if messages[0].role != 'system' %}{{ raise_exception('system message first') }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="system message first"):
        render_chat(PLAIN, template=strict)
    with pytest.raises(ValueError, match="empty"):
        render_chat([], template="qwen3")
    with pytest.raises(ChatTemplateError, match="line 1"):
        render_chat(PLAIN, template="{% for m in messages %}{{ m.content }}")
    with pytest.raises(ValueError):  # the sandbox refuses to run Python internals
        render_chat(PLAIN, template="{{ messages.__class__.__mro__ }}")


def test_tojson_keeps_chinese_and_markup_unescaped():
    tool = {"type": "function", "function": {"name": "grep", "description": "查找 <pattern> & 'quotes'",
                                             "parameters": {"type": "object", "properties": {}}}}
    rendered = render_chat(PLAIN, template="qwen3", tools=[tool])
    assert '"description": "查找 <pattern> & \'quotes\'"' in rendered


# --------------------------------------------------------------------------------------- FIM and repo level

def test_fim_prompt():
    assert fim_prompt("def add(a, b):\n    ", "\n    return c\n") == (
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c\n<|fim_middle|>")
    assert fim_prompt("", "") == "<|fim_prefix|><|fim_suffix|><|fim_middle|>"


LIBRARY = {
    "library.py": "class Book:\n    def __init__(self, title):\n        self.title = title\n",
    "student.py": "class Student:\n    borrowed = []\n",
}


def test_repo_prompt_completion():
    # As Qwen2.5-Coder's README lays out a repository: each file's content ends in its own newline,
    # and files are joined by one more.
    expected = (
        "<|repo_name|>library-system\n"
        "<|file_sep|>library.py\n"
        "class Book:\n    def __init__(self, title):\n        self.title = title\n"
        "\n"
        "<|file_sep|>student.py\n"
        "class Student:\n    borrowed = []\n"
    )
    assert repo_prompt("library-system", LIBRARY) == expected
    assert repo_prompt("library-system", list(LIBRARY.items())) == expected
    assert repo_prompt("library-system", LIBRARY, path="main.py") == expected + "\n<|file_sep|>main.py\n"


def test_repo_prompt_fim():
    prompt = repo_prompt("library-system", LIBRARY, path="main.py",
                         prefix="from library import Book\n\nbook = ", suffix="\nprint(book.title)\n")
    assert prompt == (
        "<|repo_name|>library-system\n"
        "<|file_sep|>library.py\n"
        "class Book:\n    def __init__(self, title):\n        self.title = title\n"
        "\n"
        "<|file_sep|>student.py\n"
        "class Student:\n    borrowed = []\n"
        "\n"
        "<|file_sep|>main.py\n"
        "<|fim_prefix|>from library import Book\n\nbook = <|fim_suffix|>\nprint(book.title)\n<|fim_middle|>"
    )
    assert repo_prompt("r", {}, path="a.py", suffix="x") == (
        "<|repo_name|>r\n<|file_sep|>a.py\n<|fim_prefix|><|fim_suffix|>x<|fim_middle|>")
    with pytest.raises(ValueError, match="path"):
        repo_prompt("r", LIBRARY, prefix="x")


# ------------------------------------------------------------------------------------------ tool-call parser

XML_REPLY = (
    "我先运行测试。\n\n"
    "<tool_call>\n<function=run_tests>\n"
    "<parameter=paths>\n[\"tests/test_a.py\", \"tests/测试_b.py\"]\n</parameter>\n"
    "<parameter=verbose>\ntrue\n</parameter>\n"
    "<parameter=env>\n{\"LANG\": \"zh_CN.UTF-8\"}\n</parameter>\n"
    "<parameter=timeout>\n2.5\n</parameter>\n"
    "</function>\n</tool_call>"
)
XML_ARGUMENTS = {"paths": ["tests/test_a.py", "tests/测试_b.py"], "verbose": True, "env": {"LANG": "zh_CN.UTF-8"},
                 "timeout": 2.5}
JSON_REPLY = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "杭州", "days": 1}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>'
)


def test_parse_xml_call_typed_by_schema():
    reply = parse_tool_calls(XML_REPLY, tools=[RUN_TESTS])
    assert reply == ParsedReply(content="我先运行测试。", tool_calls=[ToolCall("run_tests", XML_ARGUMENTS)],
                                reasoning=None)


def test_parse_xml_call_without_tools_keeps_strings():
    reply = parse_tool_calls(XML_REPLY)
    assert reply.tool_calls == [ToolCall("run_tests", {
        "paths": '["tests/test_a.py", "tests/测试_b.py"]', "verbose": "true", "env": '{"LANG": "zh_CN.UTF-8"}',
        "timeout": "2.5"})]


def test_parse_xml_multiline_values_lose_one_newline_each_side():
    code = "def 加(a, b):\n    return a + b\n"
    text = (f"<tool_call>\n<function=write_file>\n<parameter=path>\nsrc/数学.py\n</parameter>\n"
            f"<parameter=content>\n{code}\n</parameter>\n</function>\n</tool_call>")
    assert parse_tool_calls(text).tool_calls == [ToolCall("write_file", {"path": "src/数学.py", "content": code})]


@pytest.mark.parametrize("schema, raw, expected", [
    ({"type": "integer"}, "42", 42),
    ({"type": "integer"}, " -7 ", -7),
    ({"type": "integer"}, "4.0", "4.0"),
    ({"type": "integer"}, "四十二", "四十二"),
    ({"type": "integer"}, "null", None),
    ({"type": "number"}, "3", 3),
    ({"type": "number"}, "2.5", 2.5),
    ({"type": "number"}, "1e3", 1000.0),
    ({"type": "number"}, "NaN", "NaN"),
    ({"type": "number"}, "1e999", "1e999"),
    ({"type": "boolean"}, "true", True),
    ({"type": "boolean"}, "False", False),
    ({"type": "boolean"}, "yes", "yes"),
    ({"type": "object"}, '{"名字": "张三", "年龄": 3}', {"名字": "张三", "年龄": 3}),
    ({"type": "object"}, "{'a': True, 'b': None}", {"a": True, "b": None}),
    ({"type": "object"}, "[1, 2]", "[1, 2]"),
    ({"type": "object"}, "not json", "not json"),
    ({"type": "array"}, '["x", 2]', ["x", 2]),
    ({"type": "array"}, '{"a": 1}', '{"a": 1}'),
    ({"type": "null"}, "null", None),
    ({"type": "string"}, "null", "null"),
    ({"type": "string"}, " 42 ", " 42 "),
    ({"type": ["integer", "null"]}, "null", None),
    ({"type": ["integer", "null"]}, "8", 8),
    ({"type": ["integer", "string"]}, "八", "八"),
    ({"type": ["string", "null"]}, "null", None),
    ({"type": "int"}, "3", 3),
    ({"type": "date"}, "2024", "2024"),
    ({"enum": ["a", "b"]}, "a", "a"),
    (None, "3", "3"),
])
def test_parse_xml_value_conversion(schema, raw, expected):
    properties = {} if schema is None else {"v": schema}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": properties}}}
    reply = parse_tool_calls(f"<tool_call>\n<function=f>\n<parameter=v>\n{raw}\n</parameter>\n</function>\n</tool_call>",
                             tools=[tool])
    assert reply.tool_calls == [ToolCall("f", {"v": expected})]
    assert type(reply.tool_calls[0].arguments["v"]) is type(expected)


def test_parse_json_calls():
    reply = parse_tool_calls(JSON_REPLY, tools=[WEATHER])
    assert reply == ParsedReply(content="", tool_calls=[
        ToolCall("get_weather", {"city": "杭州", "days": 1}), ToolCall("get_weather", {"city": "北京"})])
    # Arguments the model double-encoded as a JSON string are decoded.
    encoded = '<tool_call>\n{"name": "f", "arguments": "{\\"x\\": 1}"}\n</tool_call>'
    assert parse_tool_calls(encoded).tool_calls == [ToolCall("f", {"x": 1})]


def test_parse_reasoning():
    reply = parse_tool_calls("<think>\n用户要查天气。\n</think>\n\n" + JSON_REPLY)
    assert reply.reasoning == "用户要查天气。" and len(reply.tool_calls) == 2 and reply.content == ""
    # Qwen3 thinking models whose prompt already opened <think>: only the closing tag comes back.
    assert parse_tool_calls("想一想：2×3。\n</think>\n\n答案是 6。") == ParsedReply("答案是 6。", [], "想一想：2×3。")
    # A tool call inside the reasoning is thinking, not a call.
    thought = "<think>\n也许 <tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n</think>\n\n好的。"
    assert parse_tool_calls(thought).tool_calls == [] and parse_tool_calls(thought).content == "好的。"
    plain = "  def f():\n    pass\n"
    assert parse_tool_calls(plain) == ParsedReply(plain, [], None)


GOOD_CALL = "<tool_call>\n<function=get_weather>\n<parameter=city>\n上海\n</parameter>\n</function>\n</tool_call>"
MALFORMED = {
    "unclosed tool_call": "好的。\n<tool_call>\n<function=get_weather>\n<parameter=city>\n杭",
    "missing </function>": "<tool_call>\n<function=get_weather>\n<parameter=city>\n杭州\n</parameter>\n</tool_call>",
    "missing </parameter>": "<tool_call>\n<function=get_weather>\n<parameter=city>\n杭州\n</function>\n</tool_call>",
    "garbage JSON": '<tool_call>\n{"name": "get_weather", "arguments": {"city": 杭州}}\n</tool_call>',
    "JSON without a name": '<tool_call>\n{"arguments": {"city": "杭州"}}\n</tool_call>',
    "JSON arguments not an object": '<tool_call>\n{"name": "get_weather", "arguments": ["杭州"]}\n</tool_call>',
    "text inside the function": "<tool_call>\n<function=get_weather>\n我想想\n</function>\n</tool_call>",
    "empty function name": "<tool_call>\n<function=>\n</function>\n</tool_call>",
    "neither format": "<tool_call>\nget_weather(city='杭州')\n</tool_call>",
    "unknown function": "<tool_call>\n<function=rm_rf>\n<parameter=path>\n/\n</parameter>\n</function>\n</tool_call>",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_malformed_stays_in_content(text):
    reply = parse_tool_calls(text, tools=[WEATHER])
    assert reply == ParsedReply(content=text, tool_calls=[], reasoning=None)
    # Next to a good call, the good call is kept and the bad block stays in the content.
    mixed = parse_tool_calls("先查上海。\n" + GOOD_CALL + "\n" + text, tools=[WEATHER])
    assert mixed.tool_calls == [ToolCall("get_weather", {"city": "上海"})]
    assert mixed.content == ("先查上海。\n\n" + text).strip()


def test_parse_unknown_function_accepted_without_tools():
    assert parse_tool_calls(MALFORMED["unknown function"]).tool_calls == [ToolCall("rm_rf", {"path": "/"})]


def test_parse_complete_call_missing_its_closing_tag():
    # An engine that stops on </tool_call> leaves it out; the call inside is complete, so it counts.
    text = GOOD_CALL[: -len("</tool_call>")]
    assert parse_tool_calls(text).tool_calls == [ToolCall("get_weather", {"city": "上海"})]
    json_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "上海"}}'
    assert parse_tool_calls(json_text).tool_calls == [ToolCall("get_weather", {"city": "上海"})]


def test_parse_values_may_contain_the_markup():
    snippet = "parse('<tool_call>…</tool_call>')\n# ends with </function>"
    text = (f"<tool_call>\n<function=write_file>\n<parameter=content>\n{snippet}\n</parameter>\n"
            f"</function>\n</tool_call>")
    assert parse_tool_calls(text).tool_calls == [ToolCall("write_file", {"content": snippet})]


def test_parse_survives_pathological_values():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer"}, "o": {"type": "object"}}}}}
    huge, deep = "9" * 5000, "[" * 100_000
    text = f"<tool_call>\n<function=f>\n<parameter=n>\n{huge}\n</parameter>\n<parameter=o>\n{deep}\n</parameter>\n</function>"
    assert parse_tool_calls(text, tools=[tool]).tool_calls == [ToolCall("f", {"n": huge, "o": deep})]
    assert parse_tool_calls("<tool_call>\n" + deep).content == "<tool_call>\n" + deep


def test_parse_never_raises_on_truncated_replies():
    full = parse_tool_calls(XML_REPLY, tools=[RUN_TESTS])
    for end in range(len(XML_REPLY) + 1):
        reply = parse_tool_calls(XML_REPLY[:end], tools=[RUN_TESTS])
        if reply.tool_calls:
            assert reply.tool_calls == full.tool_calls
        else:
            assert reply.content == XML_REPLY[:end]


@pytest.mark.parametrize("template", ["qwen3-coder", "qwen3", "qwen2.5"])
def test_parser_reads_back_what_the_template_writes(template):
    # The assistant turn as the template renders it parses back into the same call.
    rendered = render_chat(AGENT_LOOP[:3], template=template, tools=[RUN_TESTS], add_generation_prompt=False)
    assistant_turn = rendered.rsplit("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")
    reply = parse_tool_calls(assistant_turn, tools=[RUN_TESTS])
    assert reply.tool_calls == [ToolCall("run_tests", AGENT_LOOP[2]["tool_calls"][0]["function"]["arguments"])]


def test_tool_call_to_openai():
    call = ToolCall("get_weather", {"city": "杭州", "days": 1})
    assert call.to_openai("call_1") == {"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "杭州", "days": 1}'}}
    generated = call.to_openai()["id"]
    assert generated.startswith("call_") and generated != call.to_openai()["id"]
