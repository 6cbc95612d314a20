"""What LLM calls cost: a price table per model, and the cost of a call.

Prices are US dollars per million tokens, input and output, and the discount the
provider gives for its Batch API (0.5: half price). Three layers, the later winning:

1. ``BUILTIN_PRICES`` below (providers' public list prices);
2. the file ``GENFLEET_PRICES`` (prices.toml)::

       [models."gpt-4o-mini"]
       input = 0.15          # USD per million input tokens
       output = 0.60         # USD per million output tokens
       batch_discount = 0.5  # optional; the batch price is (1 - discount) x the price

3. a provider's own ``[provider.prices."MODEL"]`` tables in ``GENFLEET_PROVIDERS``.

A model found in none of them has no price: its cost is *unknown* (``None``), never 0.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from genfleet.errors import SettingsError

DEFAULT_BATCH_DISCOUNT = 0.5
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-4o-mini-2024-07-18 is gpt-4o-mini


@dataclass(frozen=True)
class Price:
    """USD per million tokens, and the Batch API's discount (0-1)."""

    input: float
    output: float
    batch_discount: float = DEFAULT_BATCH_DISCOUNT

    def cost(self, tokens_in: int, tokens_out: int, *, batch: bool = False) -> float:
        """The cost of a call in USD (the batch price when ``batch``)."""
        usd = (tokens_in * self.input + tokens_out * self.output) / 1_000_000
        return usd * (1 - self.batch_discount) if batch else usd


# Public list prices (USD per 1M tokens). ``sim-chat`` is the simulator's own model,
# priced like gpt-4o-mini so that demos and benchmarks show realistic figures.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o1": Price(15.00, 60.00),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "sim-chat": Price(0.15, 0.60),
}


class _PriceEntry(BaseModel):
    input: float = Field(ge=0, le=10_000)
    output: float = Field(ge=0, le=10_000)
    batch_discount: float = Field(default=DEFAULT_BATCH_DISCOUNT, ge=0, lt=1)

    def price(self) -> Price:
        return Price(self.input, self.output, self.batch_discount)


class _PricesFile(BaseModel):
    models: dict[str, _PriceEntry] = Field(default_factory=dict)


class _ProviderPrices(BaseModel):
    base_url: str = ""
    prices: dict[str, _PriceEntry] = Field(default_factory=dict)


class _ProvidersPrices(BaseModel):
    provider: list[_ProviderPrices] = Field(default_factory=list)


class PriceTable:
    """Looks up a model's price, a provider's own prices first."""

    def __init__(
        self,
        models: dict[str, Price] | None = None,
        by_provider: dict[str, dict[str, Price]] | None = None,
    ) -> None:
        self.models = {**BUILTIN_PRICES, **(models or {})}
        self.by_provider = by_provider or {}

    def price(self, model: str, provider: str = "") -> Price | None:
        """The price of ``model`` (a dated name falls back to its family), or None."""
        for name in dict.fromkeys((model, _DATED.sub("", model))):
            own = self.by_provider.get(provider, {}).get(name)
            if own is not None:
                return own
            if name in self.models:
                return self.models[name]
        return None

    def cost(
        self, model: str, tokens_in: int, tokens_out: int, *, provider: str = "",
        batch: bool = False,
    ) -> float | None:  # fmt: skip
        """The cost in USD of a call, or None when the model has no price."""
        price = self.price(model, provider)
        return None if price is None else price.cost(tokens_in, tokens_out, batch=batch)


def _read_toml(path: Path, variable: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{variable}={path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"{variable}={path}: cannot read it: {e}") from None


def _one_line(error: ValidationError, variable: str, path: Path) -> SettingsError:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return SettingsError(f"{variable}={path}: {where}: {first['msg']}")


def load_prices(prices_file: Path | None, providers_file: Path | None) -> PriceTable:
    """The price table of ``GENFLEET_PRICES`` and ``GENFLEET_PROVIDERS`` (either may be
    None); a bad file raises ``SettingsError`` with one line."""
    models: dict[str, Price] = {}
    if prices_file is not None:
        try:
            parsed = _PricesFile.model_validate(_read_toml(prices_file, "GENFLEET_PRICES"))
        except ValidationError as e:
            raise _one_line(e, "GENFLEET_PRICES", prices_file) from None
        models = {name: entry.price() for name, entry in parsed.models.items()}
    by_provider: dict[str, dict[str, Price]] = {}
    if providers_file is not None:
        raw = _read_toml(providers_file, "GENFLEET_PROVIDERS")
        try:
            providers = _ProvidersPrices.model_validate(raw)
        except ValidationError as e:
            raise _one_line(e, "GENFLEET_PROVIDERS", providers_file) from None
        for entry in providers.provider:
            own = {name: p.price() for name, p in entry.prices.items()}
            by_provider.setdefault(entry.base_url, {}).update(own)
    return PriceTable(models, by_provider)


def format_usd(value: float | None) -> str:
    """``$0.0123``, or ``unknown`` for a cost without a price."""
    if value is None:
        return "unknown"
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"
