"""The code-aware attention bias: a learned per-head bias on attention to syntactic-boundary tokens.

Every token of the vocabulary falls into one class (`zhcoder.config.CODE_CLASSES`), computed once from the bytes
the token stands for, first rule that matches:

    1 newline_indent    contains a newline, or is only spaces / tabs (two or more characters, or a tab)
    4 cjk_punctuation   contains Chinese full-width punctuation: ，。；：、！？（）「」『』《》【】“”‘’…—～·
    2 bracket           contains ( ) [ ] { }
    3 separator         contains ; : ,
    0 other             everything else (incl. tokens that are only part of a UTF-8 character)

Each attention layer holds `self_attn.code_bias`, shape (num_attention_heads, 5), zero-initialised, added to the
attention logit of every key of that class (all queries alike). At zero the model is exactly plain Qwen; training
learns how much each head should look at line starts, brackets, separators and Chinese punctuation. The class
table is the buffer `model.code_token_class` (uint8, one per vocabulary entry), saved with the checkpoint, and the
engine's KV cache keeps the class of each cached key, so training and generation compute the same bias.
`config.json` says `"code_aware_attention": true`; plain Qwen checkpoints are never touched. (transformers loads
such a checkpoint as plain Qwen and reports the extra tensors as unused.)

    from zhcoder.code_bias import enable_code_aware_attention
    enable_code_aware_attention(model, tokenizer)      # adds zero biases + the class table; same logits as before
    python -m zhcoder.code_bias                         # class counts over Qwen's vocabulary
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import CODE_CLASSES

CJK_PUNCTUATION = "，。；：、！？（）「」『』《》【】“”‘’…—～·"
BRACKETS = "()[]{}"
SEPARATORS = ";:,"


def token_class(text: str) -> int:
    """The class id of one token's text (see the module docstring)."""
    if "\n" in text or "\r" in text or (text and not text.strip(" \t") and (len(text) >= 2 or "\t" in text)):
        return CODE_CLASSES.index("newline_indent")
    for name, characters in (("cjk_punctuation", CJK_PUNCTUATION), ("bracket", BRACKETS), ("separator", SEPARATORS)):
        if any(ch in characters for ch in text):
            return CODE_CLASSES.index(name)
    return CODE_CLASSES.index("other")


def token_classes(tokenizer, vocab_size: int | None = None) -> np.ndarray:
    """uint8 class of every token id (ids past the tokenizer's vocabulary, e.g. padding rows, are "other")."""
    size = max(vocab_size or 0, tokenizer.vocab_size)
    table = np.zeros(size, dtype=np.uint8)
    for token_id in range(tokenizer.vocab_size):
        table[token_id] = token_class(tokenizer.token_bytes(token_id).decode("utf-8", errors="ignore"))
    return table


def enable_code_aware_attention(model: nn.Module, tokenizer) -> None:
    """Turn the bias on for a loaded model (idempotent): config flag, zero biases, the class table."""
    config = model.config
    table = torch.from_numpy(token_classes(tokenizer, config.vocab_size)[: config.vocab_size].copy())
    weight = model.model.embed_tokens.weight
    if not config.code_aware_attention:
        config.code_aware_attention = True
        for layer in model.model.layers:
            layer.self_attn.code_bias = nn.Parameter(torch.zeros(config.num_attention_heads, len(CODE_CLASSES),
                                                                 device=weight.device, dtype=weight.dtype))
        model.model.register_buffer("code_token_class", table.to(weight.device))
    else:
        model.model.code_token_class.copy_(table)


if __name__ == "__main__":
    from .tokenizer import Tokenizer

    counts = np.bincount(token_classes(Tokenizer.qwen()), minlength=len(CODE_CLASSES))
    for name, count in zip(CODE_CLASSES, counts):
        print(f"{name:16s} {count:7d}")
