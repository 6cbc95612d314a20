"""Deterministic text for the simulator: the same request always gets the same answer.

Text is drawn from a PRNG seeded with a digest of the request. English-like words are
used unless the prompt is mostly CJK, in which case the answer is Chinese-looking.
:func:`instance_for_schema` builds a value that validates against a JSON schema (the
subset pydantic v2's ``model_json_schema()`` and OpenAI's strict mode use).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z]")

_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "if so no will more can said who out time only its new about than into some could "
    "these two may first then do any like my now over such our man me even most made "
    "after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world "
    "still own see men work long get here between both life being under never day same "
    "another know while last might great old year off come since against go came right "
    "used take three river garden signal engine market window silver quiet bright early"
)
_WORDS = tuple(_WORD_TEXT.split())

_HANZI = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"
    "也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物"
    "现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全"
    "表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无"
    "系军很情者最立代想已通并提直题程展五果料象员革位入常文总次品式活设及管特件长求老头基资"
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_hash(messages: Any) -> str:
    """The key of ``/stats``'s ``chat_by_prompt``: sha256 of the canonical messages JSON."""
    return hashlib.sha256(canonical_json(messages).encode("utf-8")).hexdigest()[:16]


def request_digest(parts: Mapping[str, Any]) -> bytes:
    """A digest of the request fields that decide the answer's content."""
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).digest()


def rng_for(digest: bytes, salt: int = 0) -> random.Random:
    """A PRNG seeded from ``digest`` (and ``salt``, e.g. a choice index)."""
    return random.Random(int.from_bytes(digest[:16], "big") + salt)


def message_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """All text of chat messages, including the text parts of multimodal content."""
    chunks: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chunks.append(content)
        elif isinstance(content, list):
            chunks.extend(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, Mapping) and part.get("type") == "text"
            )
    return "\n".join(chunks)


def is_mostly_cjk(text: str) -> bool:
    """True when CJK characters outnumber Latin letters."""
    cjk = len(_CJK.findall(text))
    return cjk > 0 and cjk >= len(_LATIN.findall(text))


def generate_text(rng: random.Random, max_tokens: int, cjk: bool = False) -> str:
    """Text of about ``max_tokens`` tokens (never more by ``genfleet.tokens``' estimate,
    nor by the simulator's own count, which is lower for both languages)."""
    if cjk:
        return _chinese(rng, max_tokens)
    return _english(rng, max_tokens)


def _english(rng: random.Random, budget: int) -> str:
    words: list[str] = []
    pieces = 0  # words plus punctuation marks, the estimator's word count
    chars = -1  # no space before the first word
    left_in_sentence = 0
    while True:
        word = rng.choice(_WORDS)
        if left_in_sentence == 0:
            left_in_sentence = rng.randint(5, 14)
            word = word.capitalize()
        left_in_sentence -= 1
        ends = left_in_sentence == 0
        add_pieces = 2 if ends else 1
        add_chars = len(word) + 1 + (1 if ends else 0)
        if max(pieces + add_pieces, (chars + add_chars + 3) // 4) > budget:
            break
        words.append(word + "." if ends else word)
        pieces += add_pieces
        chars += add_chars
    return " ".join(words)


def _chinese(rng: random.Random, budget: int) -> str:
    if budget <= 1:
        return "。" if budget == 1 else ""
    out: list[str] = []
    until_comma = rng.randint(6, 16)
    for _ in range(budget - 1):
        until_comma -= 1
        if until_comma == 0:
            out.append("，")
            until_comma = rng.randint(6, 16)
        else:
            out.append(rng.choice(_HANZI))
    out.append("。")
    return "".join(out)


def small_json_object(rng: random.Random) -> dict[str, Any]:
    """A small JSON object for ``response_format: {"type": "json_object"}``."""
    return {
        "id": rng.randint(1, 10_000),
        "title": generate_text(rng, 6).rstrip("."),
        "tags": [rng.choice(_WORDS) for _ in range(3)],
        "ok": rng.random() < 0.5,
    }


def short_phrase(rng: random.Random, words: int = 3) -> str:
    """A few lowercase words joined by spaces."""
    return " ".join(rng.choice(_WORDS) for _ in range(words))


# --- JSON-schema instances -------------------------------------------------------------

_SOFT_DEPTH = 5  # past this, optional parts are left out so recursive models end
_HARD_DEPTH = 40


def instance_for_schema(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """A value that validates against ``schema``; raise ValueError if it cannot be built.

    Supports object, array (items, prefixItems, minItems, maxItems), string (enum,
    minLength, maxLength, common formats), integer and number bounds, boolean, null,
    const, enum, anyOf/oneOf (the first non-null branch), allOf (merged) and ``$ref``
    into ``#/$defs`` or ``#/definitions``.
    """
    return _Filler(schema, rng).value(schema, 0)


class _Filler:
    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    def value(self, schema: Any, depth: int) -> Any:
        if depth > _HARD_DEPTH:
            raise ValueError("schema nests too deeply to build an instance")
        if not isinstance(schema, Mapping):
            return "value" if schema is not False else None
        schema = self._flatten(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._rng.choice(list(schema["enum"]))
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return self.value(self._pick_branch(branches, depth), depth + 1)
        kind = self._type_of(schema, depth)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind in ("integer", "number"):
            return _number(schema, self._rng, kind == "integer")
        if kind == "boolean":
            return self._rng.random() < 0.5
        if kind == "null":
            return None
        return _string(schema, self._rng)

    def _flatten(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        for _ in range(_HARD_DEPTH):
            if "$ref" in schema:
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = {**self._lookup(str(schema["$ref"])), **rest}
            elif "allOf" in schema:
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    merged = _merge(merged, self._flatten(part))
                schema = merged
            else:
                return schema
        raise ValueError("schema references loop without end")

    def _lookup(self, ref: str) -> Mapping[str, Any]:
        node: Any = self._root
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"$ref {ref!r} points nowhere")
            node = node[part]
        if not isinstance(node, Mapping):
            raise ValueError(f"$ref {ref!r} is not a schema")
        return node

    def _pick_branch(self, branches: list[Any], depth: int) -> Any:
        nulls = [b for b in branches if isinstance(b, Mapping) and b.get("type") == "null"]
        others = [b for b in branches if b not in nulls]
        if nulls and (not others or depth >= _SOFT_DEPTH):
            return nulls[0]
        return others[0]

    def _type_of(self, schema: Mapping[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            if "null" in kind and (depth >= _SOFT_DEPTH or len(kind) == 1):
                return "null"
            kind = next((k for k in kind if k != "null"), "null")
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum")):
            return "number"
        return "string"

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        names = list(props) if depth < _SOFT_DEPTH else [n for n in props if n in required]
        out = {name: self.value(props[name], depth + 1) for name in names}
        extra = schema.get("additionalProperties")
        for name in required:
            if name not in out:
                out[name] = self.value(extra if isinstance(extra, Mapping) else {}, depth + 1)
        if not props and isinstance(extra, Mapping) and depth < _SOFT_DEPTH:
            out[short_phrase(self._rng, 1)] = self.value(extra, depth + 1)
        return out

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = list(schema.get("prefixItems") or [])
        items = schema.get("items", {})
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3, len(prefix))))
        length = low if depth >= _SOFT_DEPTH else min(max(3, low), high)
        if prefix:
            length = max(length, min(len(prefix), high))
            if items is False:
                length = min(length, len(prefix))
        out = [
            self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(length)
        ]
        return _unique(out) if schema.get("uniqueItems") else out


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if key == "properties":
            merged[key] = {**merged.get(key, {}), **value}
        elif key == "required":
            merged[key] = list(dict.fromkeys([*merged.get(key, []), *value]))
        else:
            merged.setdefault(key, value)
    return merged


def _unique(values: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(canonical_json(value), value)
    return list(seen.values())


def _bounds(schema: Mapping[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low_exclusive, high_exclusive), reading both draft-4 and 2020 forms."""
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    low_x = high_x = False
    if xlow is True or xlow is False:
        low_x = bool(xlow)
    elif xlow is not None and (low is None or xlow >= low):
        low, low_x = xlow, True
    if xhigh is True or xhigh is False:
        high_x = bool(xhigh)
    elif xhigh is not None and (high is None or xhigh <= high):
        high, high_x = xhigh, True
    return low, high, low_x, high_x


def _number(schema: Mapping[str, Any], rng: random.Random, integer: bool) -> int | float:
    low, high, low_x, high_x = _bounds(schema)
    if low is None and high is None:
        low, high = 1, 100
    elif low is None:
        low = high - 100 if high is not None else 0
    elif high is None:
        high = low + 100
    assert low is not None and high is not None
    if integer:
        ilow = math.floor(low) + 1 if low_x else math.ceil(low)
        ihigh = math.ceil(high) - 1 if high_x else math.floor(high)
        step = int(schema.get("multipleOf", 1) or 1)
        first = -(-ilow // step) * step
        if first > ihigh:
            return ilow
        return first + step * rng.randint(0, (ihigh - first) // step)
    if high <= low:
        return float(low)
    value = low + (high - low) * rng.uniform(0.1, 0.9)
    rounded = round(value, 2)
    return rounded if low < rounded < high else value


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt:
        formatted = _formatted(str(fmt), rng)
        if formatted is not None:
            return formatted
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", max(low, 64)))
    text = short_phrase(rng, rng.randint(2, 4))
    literal = _pattern_literal(schema.get("pattern"))
    if literal:  # a pattern that only asks for a fixed text somewhere, like "___"
        text = f"{text} {literal} {rng.choice(_WORDS)}"
    while len(text) < low:
        text += " " + rng.choice(_WORDS)
    return text[:high]


def _pattern_literal(pattern: Any) -> str | None:
    """The fixed text an unanchored pattern without metacharacters asks for."""
    if not isinstance(pattern, str) or not pattern or re.search(r"[\\^$.|?*+()\[\]{}]", pattern):
        return None
    return pattern


def _formatted(fmt: str, rng: random.Random) -> str | None:
    date = f"20{rng.randint(20, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    word = rng.choice(_WORDS)
    bits = rng.getrandbits(128)
    hexed = f"{bits:032x}"
    return {
        "date": date,
        "date-time": f"{date}T{clock}Z",
        "time": f"{clock}Z",
        "email": f"{word}@example.com",
        "uri": f"https://example.com/{word}",
        "url": f"https://example.com/{word}",
        "hostname": f"{word}.example.com",
        "ipv4": f"10.{bits % 256}.{(bits >> 8) % 256}.{(bits >> 16) % 256}",
        "uuid": f"{hexed[:8]}-{hexed[8:12]}-4{hexed[13:16]}-a{hexed[17:20]}-{hexed[20:]}",
        "duration": f"PT{rng.randint(1, 59)}M",
    }.get(fmt)
