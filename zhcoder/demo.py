"""Gradio web demo: streaming chat, fill-in-the-middle code completion, model info, Chinese/English interface.

It runs a local checkpoint through zhcoder's engine, or talks to an OpenAI-compatible server (`zhcoder serve`,
vLLM, ...) through the `openai` client. The interface follows the browser's Accept-Language (Chinese when it
prefers Chinese) and has a switch. Everything is served locally: no analytics, no web fonts, no share link
unless asked.

    zhcoder demo --model DIR                     # then open http://127.0.0.1:7860
    zhcoder demo --server http://127.0.0.1:8000 --api-key KEY
    python -m pytest tests/test_demo.py          # drives the demo in headless Chromium
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Iterator

import gradio as gr

from .chat import fim_prompt, render_chat
from .engine import Engine, SamplingParams

TEXT = {
    "en": {
        "title": "# zhcoder code assistant\n"
                 "A Qwen-style code model: ask it about code, or let it fill in code at the cursor.",
        "language": "Language / 语言",
        "chat": "### Chat", "conversation": "Conversation", "message": "Message",
        "message_hint": "Ask a coding question and press Enter", "send": "Send", "clear": "Clear",
        "examples": "Examples",
        "fim": "### Code completion (fill in the middle)", "prefix": "Code before the cursor",
        "suffix": "Code after the cursor", "complete": "Complete", "result": "Result (model's insertion highlighted)",
        "settings": "Generation settings", "max_new_tokens": "Max new tokens",
        "temperature": "Temperature (0 = greedy)", "top_p": "Top-p", "seed": "Seed (-1 = random)",
        "info": "Model info", "model_dir": "Model directory", "server": "Server", "model": "Model",
        "family": "Family", "layers": "Layers", "hidden": "Hidden size", "params": "Parameters",
        "context": "Context length", "unknown": "not reported",
        "empty_chat": "Type a message first.", "empty_fim": "Give the code before or after the cursor first.",
        "failed": "Generation failed", "unreachable": "Cannot read the model info",
    },
    "zh": {
        "title": "# zhcoder 代码助手\n基于 Qwen 架构的代码模型：可以就代码提问，也可以在光标处补全代码。",
        "language": "语言 / Language",
        "chat": "### 对话", "conversation": "对话记录", "message": "输入",
        "message_hint": "输入编程问题，按回车发送", "send": "发送", "clear": "清空",
        "examples": "示例",
        "fim": "### 代码补全（中间填充）", "prefix": "光标前的代码", "suffix": "光标后的代码",
        "complete": "补全", "result": "结果（高亮部分为模型补全的代码）",
        "settings": "生成参数", "max_new_tokens": "最大生成 token 数", "temperature": "温度（0 为贪心解码）",
        "top_p": "Top-p", "seed": "随机种子（-1 为随机）",
        "info": "模型信息", "model_dir": "模型目录", "server": "服务地址", "model": "模型",
        "family": "架构", "layers": "层数", "hidden": "隐藏维度", "params": "参数量",
        "context": "上下文长度", "unknown": "未提供",
        "empty_chat": "请先输入问题。", "empty_fim": "请先填写光标前或光标后的代码。",
        "failed": "生成失败", "unreachable": "无法读取模型信息",
    },
}

CHAT_EXAMPLES = [
    "用 Python 写一个函数：根据订单金额和优惠券（满减券、折扣券）计算实付金额，并附上单元测试。",
    "用 TypeScript 实现购物车类 ShoppingCart：添加商品、修改数量、删除商品、计算总价。",
    "下面的扣减库存 SQL 在高并发下为什么会超卖？怎么修复？\nUPDATE inventory SET stock = stock - 1 WHERE sku_id = ?",
    "会员积分规则：每消费 1 元积 1 分，生日当月双倍，积分一年后过期。请设计表结构并写出计算积分的 Java 方法。",
]

FIM_EXAMPLES = [
    [
        'def calc_payable(order, coupon=None):\n    """计算订单实付金额：商品总价减去优惠券抵扣，最低为 0。"""\n'
        "    total = sum(item.price * item.quantity for item in order.items)\n",
        "    return max(total - discount, 0)\n",
    ],
    [
        "class InventoryService:\n    def deduct_stock(self, sku_id: str, quantity: int) -> bool:\n"
        '        """扣减库存；库存不足时返回 False，不扣减。"""\n',
        "\n    def release_stock(self, sku_id: str, quantity: int) -> None:\n"
        '        """订单取消时归还库存。"""\n        self.stock[sku_id] += quantity\n',
    ],
    [
        "// 会员积分：每消费 1 元积 1 分，生日当月双倍积分\nfunction calcPoints(member, amount, today) {\n",
        "}\n\nmodule.exports = { calcPoints };\n",
    ],
]

# System fonts only: the default theme would fetch Google Fonts.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = ".code textarea { font-family: ui-monospace, monospace; }"


def preferred_language(accept_language: str) -> str:
    """"zh" when the Accept-Language header's most preferred language is Chinese, else "en"."""
    best, best_q = "", -1.0
    for part in accept_language.split(","):
        tag, _, params = part.strip().partition(";")
        try:
            q = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            q = 0.0
        if tag and q > best_q:
            best, best_q = tag, q
    return "zh" if best.lower().startswith("zh") else "en"


class LocalBackend:
    """A checkpoint folder run in this process by zhcoder's engine."""

    def __init__(self, model_dir: str):
        self.model_dir = str(Path(model_dir).resolve())
        self.engine = Engine.from_dir(model_dir)
        self.tokenizer = self.engine.tokenizer

    def chat(self, messages: list[dict], params: SamplingParams) -> Iterator[str]:
        prompt = render_chat(messages, template=self.tokenizer.chat_template or "qwen3", enable_thinking=False)
        return (event.text for event in self.engine.stream(prompt, params))

    def fill(self, prefix: str, suffix: str, params: SamplingParams) -> Iterator[str]:
        return (event.text for event in self.engine.stream(fim_prompt(prefix, suffix), params))

    def info(self) -> list[tuple[str, object]]:
        config = self.engine.model.config
        return [("model_dir", self.model_dir), ("family", config.model_type), ("layers", config.num_hidden_layers),
                ("hidden", config.hidden_size), ("params", _count(config.num_parameters())),
                ("context", config.max_position_embeddings)]


class ServerBackend:
    """An OpenAI-compatible server: /v1/chat/completions for chat, /v1/completions with `suffix` for FIM."""

    def __init__(self, server: str, api_key: str | None, model_name: str | None):
        import openai

        self.server = server.rstrip("/")
        base_url = self.server if self.server.endswith("/v1") else self.server + "/v1"
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none")
        self.model_name = model_name

    def model(self) -> str:
        if self.model_name is None:
            self.model_name = self.client.models.list().data[0].id
        return self.model_name

    def chat(self, messages: list[dict], params: SamplingParams) -> Iterator[str]:
        stream = self.client.chat.completions.create(model=self.model(), messages=messages, stream=True,
                                                     **self._sampling(params))
        return (chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    def fill(self, prefix: str, suffix: str, params: SamplingParams) -> Iterator[str]:
        stream = self.client.completions.create(model=self.model(), prompt=prefix, suffix=suffix, stream=True,
                                                **self._sampling(params))
        return (chunk.choices[0].text or "" for chunk in stream if chunk.choices)

    @staticmethod
    def _sampling(params: SamplingParams) -> dict:
        sampling = dict(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p)
        return sampling if params.seed is None else {**sampling, "seed": params.seed}

    def info(self) -> list[tuple[str, object]]:
        # Fields beyond the OpenAI schema are shown when the server lists them (zhcoder serve, vLLM: max_model_len).
        card = next((card for card in self.client.models.list().data if card.id == self.model()), None)
        extra = (card.model_extra if card is not None else None) or {}
        context = extra.get("context_length", extra.get("max_model_len"))
        return [("server", self.server), ("model", self.model()), ("family", extra.get("model_type")),
                ("layers", extra.get("num_hidden_layers")), ("hidden", extra.get("hidden_size")),
                ("params", _count(extra["num_parameters"]) if "num_parameters" in extra else None),
                ("context", context)]


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _text(content) -> str:
    """A Gradio message's content (a string or a list of parts) as plain text."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def fim_html(prefix: str, middle: str, suffix: str) -> str:
    """The whole file with the model's insertion highlighted."""
    return ('<pre id="fim-file" style="white-space:pre-wrap;font-family:ui-monospace,monospace;padding:8px;'
            f'border:1px solid #d1d5db;border-radius:6px">{html.escape(prefix)}<mark id="fim-middle" '
            f'style="background:#fde68a;color:#111827">{html.escape(middle)}</mark>{html.escape(suffix)}</pre>')


def build_demo(model_dir: str | None = None, server: str | None = None, api_key: str | None = None,
               model_name: str | None = None) -> gr.Blocks:
    """The demo over a local checkpoint (`model_dir`) or an OpenAI-compatible server (`server`): give one.
    `model_name`: the model id to request from the server (default: the first one it lists)."""
    if (model_dir is None) == (server is None):
        raise ValueError("give exactly one of model_dir (a local checkpoint) or server (an OpenAI-compatible URL)")
    if model_dir is not None and model_name is not None:
        raise ValueError("model_name is for server mode only")
    backend = LocalBackend(model_dir) if model_dir is not None else ServerBackend(server, api_key, model_name)
    # Every translated component with {attribute: TEXT key, or a list of keys for a list attribute}
    translated: list[tuple[gr.components.Component, dict[str, str | list[str]]]] = []

    def texts(lang: str, keys: dict) -> dict:
        return {attribute: TEXT[lang][key] if isinstance(key, str) else [TEXT[lang][k] for k in key]
                for attribute, key in keys.items()}

    def tr(cls, keys: dict, **kwargs):
        component = cls(**texts("en", keys), **kwargs)
        translated.append((component, keys))
        return component

    def info_markdown(lang: str) -> str:
        text = TEXT[lang]
        try:
            rows = backend.info()
        except Exception as error:  # e.g. the server is down: say so in the panel
            return f"{text['unreachable']}: {error}"
        return "\n".join(f"- **{text[key]}**: {text['unknown'] if value is None else value}" for key, value in rows)

    def sampling(max_new_tokens, temperature, top_p, seed) -> SamplingParams:
        seed = None if seed is None or seed < 0 else int(seed)
        return SamplingParams(max_new_tokens=int(max_new_tokens), temperature=temperature, top_p=top_p, seed=seed)

    def chat(message, history, lang, *settings):
        if not message.strip():
            gr.Warning(TEXT[lang]["empty_chat"])
            yield message, history
            return
        messages = [{"role": m["role"], "content": _text(m["content"])} for m in history]
        messages.append({"role": "user", "content": message})
        shown = messages + [{"role": "assistant", "content": ""}]
        yield "", shown
        try:
            for piece in backend.chat(messages, sampling(*settings)):
                shown[-1]["content"] += piece
                yield "", shown
        except Exception as error:  # a bad setting, a too long prompt, a server error: tell the user
            gr.Warning(f"{TEXT[lang]['failed']}: {error}")
            yield "", shown if shown[-1]["content"] else shown[:-1]

    def fill(prefix, suffix, lang, *settings):
        if not (prefix.strip() or suffix.strip()):
            gr.Warning(TEXT[lang]["empty_fim"])
            yield gr.skip()
            return
        middle = ""
        yield fim_html(prefix, middle, suffix)
        try:
            for piece in backend.fill(prefix, suffix, sampling(*settings)):
                middle += piece
                yield fim_html(prefix, middle, suffix)
        except Exception as error:
            gr.Warning(f"{TEXT[lang]['failed']}: {error}")

    def detect(request: gr.Request):
        lang = preferred_language(request.headers.get("accept-language", ""))
        return lang, info_markdown(lang)

    def relabel(lang):
        return *(gr.update(**texts(lang, keys)) for _, keys in translated), info_markdown(lang)

    with gr.Blocks(title="zhcoder", analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            tr(gr.Markdown, {"value": "title"}, scale=4)
            lang = tr(gr.Radio, {"label": "language"}, choices=[("中文", "zh"), ("English", "en")], value="en",
                      elem_id="language", scale=1)
        with gr.Row():
            with gr.Column():
                tr(gr.Markdown, {"value": "chat"})
                chatbot = tr(gr.Chatbot, {"label": "conversation"}, elem_id="chatbot", height=360)
                message = tr(gr.Textbox, {"label": "message", "placeholder": "message_hint"}, elem_id="message",
                             lines=1, max_lines=8)
                with gr.Row():
                    send = tr(gr.Button, {"value": "send"}, variant="primary", elem_id="send")
                    clear = tr(gr.Button, {"value": "clear"}, elem_id="clear")
                # gr.Dataset, not gr.Examples: loading a gr.Examples example resets its inputs' labels to English
                chat_examples = tr(gr.Dataset, {"label": "examples", "headers": ["message"]}, components=[message],
                                   samples=[[example] for example in CHAT_EXAMPLES], elem_id="chat-examples")
            with gr.Column():
                tr(gr.Markdown, {"value": "fim"})
                # Textboxes, not gr.Code: gr.Code strips the values it is sent (the examples' newlines, indents)
                prefix = tr(gr.Textbox, {"label": "prefix"}, lines=6, max_lines=20, elem_id="prefix",
                            elem_classes="code")
                suffix = tr(gr.Textbox, {"label": "suffix"}, lines=3, max_lines=20, elem_id="suffix",
                            elem_classes="code")
                complete = tr(gr.Button, {"value": "complete"}, variant="primary", elem_id="complete")
                tr(gr.Markdown, {"value": "result"})
                result = gr.HTML(fim_html("", "", ""), elem_id="fim-result")
                fim_examples = tr(gr.Dataset, {"label": "examples", "headers": ["prefix", "suffix"]},
                                  components=[prefix, suffix], samples=FIM_EXAMPLES, elem_id="fim-examples")
        with gr.Row():
            with tr(gr.Accordion, {"label": "settings"}, open=True):
                settings = [
                    tr(gr.Slider, {"label": "max_new_tokens"}, minimum=1, maximum=4096, value=256, step=1,
                       elem_id="max-new-tokens"),
                    tr(gr.Slider, {"label": "temperature"}, minimum=0, maximum=2, value=0.7, step=0.05),
                    tr(gr.Slider, {"label": "top_p"}, minimum=0.05, maximum=1, value=0.8, step=0.05),
                    tr(gr.Number, {"label": "seed"}, value=0, precision=0),
                ]
            with tr(gr.Accordion, {"label": "info"}, open=True):
                info = gr.Markdown(elem_id="model-info")

        chat_inputs = dict(fn=chat, inputs=[message, chatbot, lang, *settings], outputs=[message, chatbot],
                           concurrency_id="model")
        message.submit(**chat_inputs)
        send.click(**chat_inputs)
        chat_examples.click(lambda sample: sample[0], inputs=chat_examples, outputs=message)
        fim_examples.click(lambda sample: sample, inputs=fim_examples, outputs=[prefix, suffix])
        clear.click(lambda: ("", []), outputs=[message, chatbot])
        complete.click(fill, inputs=[prefix, suffix, lang, *settings], outputs=result, concurrency_id="model")
        lang.change(relabel, inputs=lang, outputs=[component for component, _ in translated] + [info])
        demo.load(detect, outputs=[lang, info])
    return demo


def launch(model_dir: str | None = None, server: str | None = None, host: str = "127.0.0.1", port: int = 7860,
           api_key: str | None = None, share: bool = False, model_name: str | None = None) -> None:
    """Build the demo and serve it until interrupted (see build_demo for the arguments)."""
    demo = build_demo(model_dir=model_dir, server=server, api_key=api_key, model_name=model_name)
    demo.queue(default_concurrency_limit=1)  # one generation at a time on the model ("model" concurrency id)
    demo.launch(server_name=host, server_port=port, share=share, theme=THEME, css=CSS, ssr_mode=False, footer_links=[])
