"""A tamer prompt after a moderation rejection; deterministic, no model involved.

The rule: keep the first clause only (up to the first , ; : . ! ? or a dash, also
their full-width forms), then drop every word that looks like a modifier: English
words of 6+ letters ending in an adjective, adverb or participle suffix (-ly, -ous,
-ful, -ive, -less, -ish, -able, -ible, -ed, -en), and Chinese "...的" attributes.
The clause's last word (its head noun, usually) is always kept.
"""

from __future__ import annotations

import re

_CLAUSE_END = re.compile(r"[,;:.!?，。；：！？、\n]|\s[-–—]+\s")
_MODIFIER = re.compile(r"^[a-z]{2,}(?:ly|ous|ful|ive|less|ish|able|ible|ed|en)$")
_CJK_ATTRIBUTE = re.compile(r"[^\s的]{1,12}的")
_EDGE_PUNCT = "\"'()[]{}«»“”‘’"
_MIN_MODIFIER_LEN = 6


def _is_modifier(word: str) -> bool:
    bare = word.strip(_EDGE_PUNCT).lower()
    return len(bare) >= _MIN_MODIFIER_LEN and bool(_MODIFIER.match(bare))


def first_clause(prompt: str) -> str:
    """The prompt up to its first clause boundary, trimmed."""
    return _CLAUSE_END.split(prompt.strip(), maxsplit=1)[0].strip()


def simplify_prompt(prompt: str) -> str | None:
    """The simplified prompt, or None when the rule changes nothing (or leaves nothing)."""
    clause = _CJK_ATTRIBUTE.sub("", first_clause(prompt)).strip()
    words = clause.split()
    kept = [w for w in words[:-1] if not _is_modifier(w)] + words[-1:]
    simplified = " ".join(kept)
    if not simplified or simplified == " ".join(prompt.split()):
        return None
    return simplified
