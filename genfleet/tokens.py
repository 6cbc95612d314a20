"""A token estimator that needs no tokenizer files.

Used before a call to reserve tokens-per-minute capacity (the provider's ``usage``
corrects it afterwards) and by the simulator to count what it serves. CJK characters
(Chinese, Japanese kana and kanji, Korean) are about one token each; other text is
about one token per four characters, and never fewer tokens than words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

_CJK = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)
_WORD = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators per chat message


@lru_cache(maxsize=256)  # system prompts and personas come back on every call
def estimate_text_tokens(text: str) -> int:
    """Estimate the tokens of one string (an upper-leaning estimate)."""
    if not text:
        return 0
    rest, cjk = _CJK.subn(" ", text)
    words = len(_WORD.findall(rest))
    by_chars = (len(rest.strip()) + 3) // 4
    return cjk + max(words, by_chars)


IMAGE_PART_TOKENS = 85  # a low-detail image part


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, Iterable):
        total = 0
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                total += estimate_text_tokens(str(part.get("text", "")))
            else:
                total += IMAGE_PART_TOKENS
        return total
    return 0


def estimate_messages_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimate the prompt tokens of a list of chat messages."""
    return sum(MESSAGE_OVERHEAD_TOKENS + _content_tokens(m.get("content")) for m in messages)
