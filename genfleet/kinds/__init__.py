"""Job kinds: one contract module per kind (see ``genfleet.kinds.base``).

``get_kind(name)`` gives a kind's contract; ``register(kind)`` adds one.
"""

from genfleet.kinds.base import (
    BUILTIN_KINDS,
    JobKind,
    ReadInputs,
    TaskDef,
    UnknownKindError,
    all_kinds,
    get_kind,
    on_register,
    register,
)

__all__ = [
    "BUILTIN_KINDS",
    "JobKind",
    "ReadInputs",
    "TaskDef",
    "UnknownKindError",
    "all_kinds",
    "get_kind",
    "on_register",
    "register",
]
