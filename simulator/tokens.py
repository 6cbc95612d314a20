"""How the simulated provider counts tokens: a rule of its own, not genfleet's estimator.

A text costs one token per 4 bytes of its UTF-8 encoding, rounded up (an English word
of 7 letters and its space is 2 tokens; a Chinese character, 3 bytes, is 3/4 of one);
each chat message adds 3 tokens and each image part 85. Some providers bill by bytes
like this. What matters here is that it is *not* the rule the gateway reserves with
(``genfleet.tokens``): the simulator's TPM cap and ``usage`` follow this count, so a
test or benchmark catches a gateway estimate that is too low.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 3
IMAGE_PART_TOKENS = 85


def count_text(text: str) -> int:
    """Tokens of one text: its UTF-8 bytes / 4, rounded up."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)


def _content(content: Any) -> int:
    if isinstance(content, str):
        return count_text(content)
    if isinstance(content, Iterable):
        return sum(
            count_text(str(part.get("text", "")))
            if isinstance(part, Mapping) and part.get("type") == "text"
            else IMAGE_PART_TOKENS
            for part in content
        )
    return 0


def count_messages(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a list of chat messages."""
    return sum(MESSAGE_OVERHEAD_TOKENS + _content(m.get("content")) for m in messages)
