"""The spending options every submit function takes: ``mode`` and ``max_cost_usd``.

``mode="batch"`` sends the job's LLM calls through the provider's Batch API (about
half price, answers within the completion window; see ``workers.batch``);
``max_cost_usd`` is the job's budget (see ``workers.budget``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import redis

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.prices import format_usd, load_prices
from genfleet.settings import Settings
from genfleet.store import JobKeys, JobStore
from genfleet.summary import job_cost
from producer.cli_common import MAX_BUDGET_USD, spend_options
from workers.budget import job_key
from workers.callstats import read_stats

__all__ = ["MAX_BUDGET_USD", "check_budget", "raise_budget", "spend_options", "spend_spec"]


def check_budget(max_cost_usd: object, name: str = "max_cost_usd") -> float | None:
    """A budget in USD (> 0), or None for none."""
    if max_cost_usd is None:
        return None
    if (
        isinstance(max_cost_usd, bool)
        or not isinstance(max_cost_usd, int | float)
        or not math.isfinite(max_cost_usd)
        or not 0 < max_cost_usd <= MAX_BUDGET_USD
    ):
        raise InputError(
            f"{name}={max_cost_usd!r} is invalid: allowed above 0 up to {MAX_BUDGET_USD:g} (USD)"
        )
    return float(max_cost_usd)


def spend_spec(
    settings: Settings, mode: object, max_cost_usd: object, models: Iterable[str | None]
) -> dict[str, Any]:
    """The spec entries of a job's spending options, checked (one ``InputError`` line)."""
    if mode not in C.API_MODES:
        raise InputError(f"mode={mode!r} is invalid: allowed {', '.join(C.API_MODES)}")
    budget = check_budget(max_cost_usd)
    if budget is not None:
        prices = load_prices(settings.genfleet_prices, settings.genfleet_providers)
        for model in filter(None, models):
            if prices.price(model) is None and not prices.by_provider:
                raise InputError(
                    f"model {model} has no price, so a budget cannot be kept: "
                    "give its price in GENFLEET_PRICES (prices.toml)"
                )
    return {"api_mode": mode, "max_cost_usd": budget}


def check_image_spending(mode: object, max_cost_usd: object) -> None:
    """Image jobs take the spending options like every kind, with their defaults only:
    the Batch API carries LLM calls, and pictures have no price to keep a budget by."""
    if mode != C.API_ONLINE:
        raise InputError(
            f"mode={mode!r} is invalid for an image job: allowed {C.API_ONLINE} "
            "(the Batch API carries LLM calls only)"
        )
    if max_cost_usd is not None:
        check_budget(max_cost_usd)
        raise InputError(
            f"max_cost_usd={max_cost_usd!r} is invalid for an image job: allowed none "
            "(pictures have no price in the price table, so a budget cannot be kept)"
        )


def raise_budget(store: JobStore, job_id: str, max_cost_usd: object) -> float:
    """Give a finished job a new total budget before it is resumed; returns what it
    has spent so far. The new budget must be above that."""
    budget = check_budget(max_cost_usd, "--max-cost")
    assert budget is not None
    client: redis.Redis = store.r
    spent = job_cost(read_stats(client, C.KEY_STATS_JOB.format(job_id=job_id)))
    if spent is not None and budget <= spent:
        raise InputError(
            f"--max-cost {budget:g} is not above the {format_usd(spent)} job {job_id} "
            "has already spent: give the new total budget"
        )
    record = store.record(job_id)
    record.spec["max_cost_usd"] = budget
    with client.pipeline() as pipe:
        pipe.hset(JobKeys.of(job_id).job, "record", record.model_dump_json(exclude={"step_ids"}))
        pipe.hset(job_key(job_id), "spent", f"{spent or 0.0:.10f}")
        pipe.hdel(job_key(job_id), "stopped")
        pipe.expire(job_key(job_id), C.BUDGET_TTL_S)
        pipe.execute()
    return spent or 0.0
