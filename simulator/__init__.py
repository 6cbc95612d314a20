"""An OpenAI-compatible provider simulator for offline demos, tests and benchmarks.

Run it with ``python -m simulator --port 0``, or from Python with
:class:`simulator.process.SimulatorProcess`.
"""

from simulator.config import SimulatorConfig, parse_error_rate

__all__ = ["SimulatorConfig", "parse_error_rate"]
