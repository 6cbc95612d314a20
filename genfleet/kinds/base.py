"""What every job kind provides, and the registry of kinds.

A job kind is one contract module (``genfleet/kinds/<kind>.py``) holding a subclass
of ``JobKind``: its name, its typed spec, its step ids (built and parsed in one
place), its canvas, how its outputs become result records, and its metrics. The
prompts and calls of a kind live in one plain worker module, named by the kind's
``TaskDef``s and imported only by workers, so a contract imports neither the
``openai`` SDK nor the gateway and the producer stays light.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from genfleet import constants as C
from genfleet.errors import GenfleetError, InputError
from genfleet.records import JobMetrics, JobRecord, JobView

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

S = TypeVar("S", bound=BaseModel)
ReadInputs = Callable[[list[str]], Mapping[str, str | None]]  # job input names -> values

SPEC_CACHE_SIZE = 64  # jobs whose parsed spec a process keeps
_spec_lock = threading.Lock()

# The built-in kinds: name -> contract module (imported on first use).
BUILTIN_KINDS = {
    "chapter": "genfleet.kinds.chapter",
    "persona": "genfleet.kinds.persona",
    "tweets": "genfleet.kinds.tweets",
    "batch": "genfleet.kinds.batch",
    "images": "genfleet.kinds.images",
    "recipe": "genfleet.kinds.recipe",
}


class SpecBase(BaseModel):
    """What every kind's spec may hold besides its own fields: the spending options
    (``producer.spend``) the step runner reads."""

    api_mode: str = C.API_ONLINE
    max_cost_usd: float | None = None


class UnknownKindError(GenfleetError):
    """A job names a kind this process does not know."""


@dataclass(frozen=True)
class TaskDef:
    """One Celery task of a kind: its name (the prefix routes it to a queue) and the
    worker logic it runs, as ``module:function`` (imported by workers only).

    The function takes a ``workers.stepcall.StepCall`` and returns the step's output
    and the call's ``ChatResult`` (or None). ``inputs``, when set, names the job
    inputs a step reads (from its step id): they come with the step's start, in the
    same round trip (``StepCall.inputs``).
    """

    name: str
    logic: str
    doc: str
    inputs: Callable[[str], list[str]] | None = None


class JobKind(Generic[S]):
    """The contract of one job kind. Subclasses set the class attributes and
    override ``task_of``, ``parts`` and, where the default does not fit, the rest."""

    name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]
    tasks: ClassVar[tuple[TaskDef, ...]]
    # False for a kind whose steps call no LLM: its status shows no token counts.
    counts_tokens: ClassVar[bool] = True

    def spec(self, record: JobRecord) -> S:
        """The job's spec, typed (checked when the job was made; a job's spec never
        changes, so a worker parses it once per job)."""
        key = (record.id, record.created_at)
        with _spec_lock:
            cache = self.__dict__.setdefault("_specs", {})
            if key not in cache:
                if len(cache) >= SPEC_CACHE_SIZE:
                    cache.pop(next(iter(cache)))
                cache[key] = self.spec_model.model_validate(record.spec)
            spec: S = cache[key]
        return spec

    def check_spec(self, source: str, **fields: Any) -> S:
        """A spec from fields, or one ``InputError`` line naming the field."""
        from genfleet.kinds.checks import one_line

        try:
            return self.spec_model(**fields)  # type: ignore[return-value]
        except ValidationError as e:
            raise InputError(one_line(e, source)) from None

    def label(self, record: JobRecord) -> str:
        """What ``genfleet jobs`` shows as the job's kind."""
        return self.name

    def task_of(self, step_id: str) -> str:
        """The task name that runs a step."""
        return self.tasks[0].name

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:
        """The canvas of the job's ``steps`` (all, or those ``resume`` re-runs), as
        parts that run side by side before the finalize task."""
        raise NotImplementedError

    def serial(self, record: JobRecord) -> bool:
        """True when the parts run one after the other instead of side by side."""
        return False

    def records(self, view: JobView, read_inputs: ReadInputs) -> list[dict[str, Any]]:
        """What the job made, one JSON record per thing (``--format jsonl``), then one
        record per failed step (``ok: false``, its error): a line for every step's fate."""
        return [*self.made(view, read_inputs), *self.failures(view)]

    def made(self, view: JobView, read_inputs: ReadInputs) -> list[dict[str, Any]]:
        """One record per thing made; by default every successful step's output."""
        return [
            {"step_id": r.step_id, "ok": True,
             **(r.output if isinstance(r.output, dict) else {"output": r.output})}
            for r in view.step_results()
            if r.ok
        ]  # fmt: skip

    def failures(self, view: JobView) -> list[dict[str, Any]]:
        """One record per step that failed (and has no success since)."""
        return [
            {"step_id": r.step_id, "ok": False, **self.context(view, r.step_id),
             "error": r.error, "error_type": r.error_type, "raw": r.raw}
            for r in view.step_results()
            if not r.ok and r.step_id not in view.ok
        ]  # fmt: skip

    def context(self, view: JobView, step_id: str) -> dict[str, Any]:
        """What a step's records are about (a batch step's topic and level)."""
        return {}

    def metrics(self, view: JobView, metrics: JobMetrics) -> dict[str, Any]:
        """Figures of this kind, added to the job's metrics under ``extra``."""
        return {}


_registry: dict[str, JobKind[Any]] = {}
_listeners: list[Callable[[JobKind[Any]], None]] = []


K = TypeVar("K", bound="JobKind[Any]")


def register(kind: K) -> K:
    """Make a kind known to this process (built-ins register themselves on import)."""
    _registry[kind.name] = kind
    for listener in _listeners:
        listener(kind)
    return kind


def on_register(listener: Callable[[JobKind[Any]], None]) -> None:
    """Call ``listener`` for every kind known now and every kind registered later
    (the worker's task factory)."""
    _listeners.append(listener)
    for kind in list(_registry.values()):
        listener(kind)


def get_kind(name: str) -> JobKind[Any]:
    """The contract of a kind, importing a built-in on first use."""
    if name not in _registry and name in BUILTIN_KINDS:
        importlib.import_module(BUILTIN_KINDS[name])
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(set(BUILTIN_KINDS) | set(_registry)))
        raise UnknownKindError(f"unknown job kind {name!r}: known {known}") from None


def all_kinds() -> list[JobKind[Any]]:
    """Every built-in kind and every kind registered so far."""
    for name in BUILTIN_KINDS:
        get_kind(name)
    return list(_registry.values())
