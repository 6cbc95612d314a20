"""Recipe templates: Jinja2 in a sandbox, undefined names as errors.

A template sees plain data only (a row's fields, earlier stages' outputs). The
sandbox refuses attribute access to internals (``__class__``, ``mro``...), calls
of anything unsafe, and ranges or repeated texts beyond a cap. So that rendering
stays linear in the size of its data, a template may loop but not nest loops, and
may not define macros or include other templates; a rendered prompt longer than
``MAX_RENDERED_CHARS`` is an error. Every failure is a ``TemplateProblem`` with one
line saying what went wrong.
"""

from __future__ import annotations

import functools
import operator
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_RENDERED_CHARS = 200_000
MAX_TEMPLATE_CHARS = 20_000
MAX_CALL_NUMBER = 100_000  # a number given to a method or filter ('x'.ljust(n)) at most


class TemplateProblem(ValueError):
    """A template that does not compile or render; the message is one line."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with ``*`` and ``**`` capped as well."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("an exponent above 64 is not allowed in a template")
            return operator.pow(left, right)
        sizes = [len(v) for v in (left, right) if isinstance(v, str | list | tuple)]
        counts = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
        if sizes and counts and sizes[0] * max(counts[0], 0) > MAX_RENDERED_CHARS:
            raise SecurityError("a repeated text or list in a template is too long")
        return operator.mul(left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_numbers(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _check_numbers(args: Any, kwargs: Any) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int | float) and abs(value) > MAX_CALL_NUMBER:
            raise SecurityError(f"a number above {MAX_CALL_NUMBER} in a call is not allowed")


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
# Plain data only: no lipsum (its size is a number), cycler or joiner objects.
_ENV.globals = {"range": _ENV.globals["range"], "dict": dict}


def _checked_filter(f: Any) -> Any:
    @functools.wraps(f)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_numbers(args[1:], kwargs)  # args[0]: the value, or Jinja's context
        return f(*args, **kwargs)

    return checked


_ENV.filters = {name: _checked_filter(f) for name, f in _ENV.filters.items()}


_REFUSED = (nodes.Macro, nodes.CallBlock, nodes.Include, nodes.Import, nodes.FromImport,
            nodes.Extends)  # fmt: skip


@lru_cache(maxsize=256)
def _compiled(source: str) -> Any:
    tree = _ENV.parse(source)
    for node in tree.find_all(_REFUSED):
        raise TemplateProblem(
            f"template line {node.lineno}: {type(node).__name__.lower()} is not allowed in a recipe"
        )
    for loop in tree.find_all(nodes.For):
        if loop.recursive or any(True for _ in loop.find_all(nodes.For)):
            raise TemplateProblem(f"template line {loop.lineno}: loops may not be nested")
    return _ENV.from_string(tree)


def check_template(source: str) -> None:
    """Raise ``TemplateProblem`` if ``source`` does not compile."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(
            f"the template has {len(source)} characters, allowed {MAX_TEMPLATE_CHARS}"
        )
    try:
        _compiled(source)
    except TemplateSyntaxError as e:
        raise TemplateProblem(f"template line {e.lineno}: {e.message}") from None


def render(source: str, context: dict[str, Any]) -> str:
    """Render ``source`` with ``context``; ``TemplateProblem`` on any failure."""
    check_template(source)
    try:
        text: str = _compiled(source).render(context)
    except SecurityError as e:
        raise TemplateProblem(f"refused by the template sandbox: {e}") from None
    except TemplateError as e:
        raise TemplateProblem(_one_line(e.message or e.__class__.__name__)) from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as e:
        raise TemplateProblem(_one_line(f"{e.__class__.__name__}: {e}")) from None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateProblem(
            f"the rendered text has {len(text)} characters, allowed {MAX_RENDERED_CHARS}"
        )
    return text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def sample_for_schema(schema: Any, depth: int = 0) -> Any:
    """A value shaped like ``schema`` (for checking templates before any answer exists)."""
    if not isinstance(schema, dict) or depth > 8:
        return "..."
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: sample_for_schema(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, min(int(schema.get("minItems") or 1), 10))
        return [sample_for_schema(schema.get("items"), depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    return "..."
