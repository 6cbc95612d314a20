"""Spoiled answers for tests of what a worker does with a bad model answer.

``garbage_patterns`` maps a text found in a request's messages to a kind of bad
answer, optionally only for the first N matching requests: ``"invalid"``,
``"truncated*1"``, ``"empty"``, ``"short*2"`` (one item fewer in ``items``), ``"echo"``
(the request's own text as the answer: markup in a prompt comes back from the model).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

KINDS = frozenset({"invalid", "truncated", "empty", "short", "echo"})


def parse_rule(
    rule: str, kinds: frozenset[str] = KINDS, what: str = "garbage"
) -> tuple[str, int | None]:
    """``"short*2"`` -> (``"short"``, 2); ``"empty"`` -> (``"empty"``, None).
    ``kinds``: the kinds allowed; ``what``: the rules' name in an error."""
    kind, _, times = rule.partition("*")
    if kind not in kinds:
        raise ValueError(f"{what} kind {kind!r} must be one of {', '.join(sorted(kinds))}")
    if times and (not times.isdigit() or int(times) < 1):
        raise ValueError(f"{what} rule {rule!r}: the count after * must be a positive integer")
    return kind, int(times) if times else None


def spoil(content: str, kind: str, prompt: str = "") -> str:
    """A bad version of a good answer (``prompt``: the request's text, for ``echo``)."""
    if kind == "echo":
        return prompt
    if kind == "empty":
        return ""
    if kind == "invalid":
        return "Sure! Here is your answer: {not json"
    if kind == "truncated":
        return content[: max(1, len(content) // 2)]
    try:
        doc = json.loads(content)
    except ValueError:
        return content
    if isinstance(doc, dict) and isinstance(doc.get("items"), list) and doc["items"]:
        doc["items"] = doc["items"][:-1]
    return json.dumps(doc, ensure_ascii=False)


class PatternRules:
    """Which requests a set of ``{pattern: "kind[*N]"}`` rules picks, counting rules
    limited to N uses."""

    kinds: frozenset[str] = KINDS
    what = "garbage"

    def __init__(self) -> None:
        self.used: Counter[str] = Counter()

    def kind_for(self, rules: Mapping[str, str], text: str) -> str | None:
        for pattern, rule in rules.items():
            if pattern not in text:
                continue
            kind, times = parse_rule(rule, self.kinds, self.what)
            if times is not None and self.used[pattern] >= times:
                continue
            self.used[pattern] += 1
            return kind
        return None


class Garbage(PatternRules):
    """Which requests get a spoiled answer."""

    def apply(self, choices: list[dict[str, Any]], kind: str, prompt: str = "") -> None:
        for choice in choices:
            message = choice["message"]
            message["content"] = spoil(message["content"] or "", kind, prompt)
