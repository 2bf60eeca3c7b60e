"""Token healing: a prompt that ends inside what the tokenizer would make one token gets a sensible continuation.

Byte-level BPE learns tokens that span boundaries code prompts end on: Qwen's and zhcoder-nano's vocabularies hold
"):\\n" as one token, so a prompt ending "def add(a, b):" ends with the token "):", which training text almost never
follows with a newline; the model has to continue from a spot it has rarely seen ("def add(a, b):s =sn..."). Healing
backs the prompt up by its last token and makes the first generated token one that starts with that token's bytes
("):" -> "):\\n" and the like); the bytes that were the prompt's are not repeated in the completion's text. This is
the hard-constraint form (as in Microsoft's guidance); transformers' `token_healing` only biases the choice and strips
the prompt's whitespace, which loses indentation.

What changes besides the text: the first generated token re-spells the prompt's last token, so it is one of
`max_new_tokens` and of the completion's token ids and counts (the prompt's count stays the prompt as given); it is
no stop token when it only re-spells (a prompt ending in a newline, with the newline as a stop id); the repetition
penalty sees the tokens fed and generated (the healed prompt, then that first token).

    SamplingParams(token_healing=True)                   # Engine.generate / stream, the server's scheduler
    zhcoder complete 'def 计算订单总价(订单列表):'           # on by default in the CLI (--no-token-healing)
    python -m pytest tests/test_healing.py
"""

from __future__ import annotations

import bisect

import torch


class TokenHealer:
    """The tokens of a tokenizer by their bytes, sorted, so the tokens that start with given bytes are one range."""

    def __init__(self, tokenizer):
        added = set(tokenizer.backend.get_added_tokens_decoder())
        pairs = sorted((tokenizer.token_bytes(i), i) for i in range(tokenizer.vocab_size) if i not in added)
        pairs = [(data, i) for data, i in pairs if data]
        self.keys = [data for data, _ in pairs]
        self.ids = [i for _, i in pairs]
        self.healable = set(self.ids)
        self.token_bytes = tokenizer.token_bytes

    def extensions(self, tail: bytes) -> list[int]:
        """Ids of the (non-added) tokens whose bytes start with `tail` (`tail`'s own token among them)."""
        first = bisect.bisect_left(self.keys, tail)
        end = first
        while end < len(self.keys) and self.keys[end].startswith(tail):
            end += 1
        return self.ids[first:end]

    def heal(self, ids: list[int]) -> tuple[list[int], bytes]:
        """`ids` less its last token and that token's bytes; unchanged (and b"") when the last token is an added
        token (a chat or FIM marker) or the prompt is a single token."""
        if len(ids) < 2 or ids[-1] not in self.healable:
            return list(ids), b""
        return list(ids[:-1]), self.token_bytes(ids[-1])

    def mask(self, tails: list[bytes], vocab: int, device) -> torch.Tensor | None:
        """(rows, vocab) bool: which first tokens each row may take (all, for a row with no tail); None when no row
        has a tail."""
        if not any(tails):
            return None
        allowed = torch.ones(len(tails), vocab, dtype=torch.bool)
        for row, tail in enumerate(tails):
            if tail:
                allowed[row] = False
                allowed[row, self.extensions(tail)] = True
        return allowed.to(device)
