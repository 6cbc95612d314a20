"""Command line: ``python -m simulator [options]`` (also ``genfleet simulate``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from simulator.config import SimulatorConfig, parse_error_rate
from simulator.process import READY_PREFIX
from simulator.server import serve

DESCRIPTION = (
    "Run the OpenAI-compatible provider simulator (chat completions, images, Batch API) "
    "on --host:--port until Ctrl-C or SIGTERM. Point workers at it with "
    "OPENAI_BASE_URL=http://HOST:PORT/v1 and any OPENAI_API_KEY (or one of --keys)."
)
EPILOG = (
    "At run time: GET /stats (calls by status and prompt, tokens), POST /stats/reset, and "
    "GET or POST /admin/config with a JSON object to change latency_ms, jitter_ms, "
    'per_token_ms, rpm, tpm, error_rates ({"429": 0.1}), timeout_s, output_tokens, '
    'retry_after_s, fail_patterns ({"some prompt text": 400}: a chat call whose messages '
    'hold the text gets that status), garbage_patterns ({"text": "invalid"}) and '
    "valid_keys (GET lists every field). Tokens are counted as UTF-8 bytes / 4 "
    "(simulator/tokens.py)."
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _error_rate(text: str) -> tuple[str, float]:
    try:
        return parse_error_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser(prog: str = "python -m simulator") -> argparse.ArgumentParser:
    """The argument parser of the simulator's command line."""
    p = _Parser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=200.0, help="base latency of an answer")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +- around the latency")
    p.add_argument("--per-token-ms", type=float, default=0.0,
                   help="latency added per completion token")  # fmt: skip
    p.add_argument("--rpm", type=int, default=0, help="requests per minute per key; 0 = none")
    p.add_argument("--tpm", type=int, default=0, help="tokens per minute per key; 0 = none")
    p.add_argument(
        "--error-rate",
        type=_error_rate,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="share of chat calls answered with an error (an HTTP status 400-599, or "
        "'timeout': the call hangs --timeout-s), e.g. 429=0.1 503=0.05 timeout=0.01; "
        "repeatable; the rates add up to at most 1",
    )
    p.add_argument("--timeout-s", type=float, default=30.0,
                   help="how long an injected 'timeout' hangs")  # fmt: skip
    p.add_argument("--output-tokens", type=int, default=200,
                   help="completion length when max_tokens allows")  # fmt: skip
    p.add_argument("--keys", type=_keys, default=(), help="k1,k2: the only accepted keys")
    p.add_argument("--forbidden-keys", type=_keys, default=(), help="k1,k2: keys that get 403")
    p.add_argument(
        "--moderation-words",
        type=_keys,
        default=("forbidden",),
        help="w1,w2: image prompts with these get 400 content_policy_violation",
    )
    p.add_argument("--image-task-seconds", type=float, default=1.0,
                   help="how long an async image task takes")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seeds error injection and jitter")
    p.add_argument("--batch-seconds", type=float, default=2.0,
                   help="how long a Batch API batch takes")  # fmt: skip
    p.add_argument("--batch-expire-first", type=int, default=0,
                   help="the first N batches expire half-done")  # fmt: skip
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build the config from parsed arguments; raise ValueError on a bad value."""
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        per_token_ms=args.per_token_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        error_rates=dict(args.error_rate),
        timeout_s=args.timeout_s,
        output_tokens=args.output_tokens,
        valid_keys=args.keys,
        forbidden_keys=args.forbidden_keys,
        moderation_words=args.moderation_words,
        image_task_seconds=args.image_task_seconds,
        seed=args.seed,
        batch_seconds=args.batch_seconds,
        batch_expire_first=args.batch_expire_first,
    )


def _announce(base_url: str) -> None:
    sys.stdout.write(f"{READY_PREFIX}{base_url}\n")
    sys.stdout.flush()


async def _run(config: SimulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not possible off the main thread or on Windows; Ctrl-C still works there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await serve(config, stop, on_ready=_announce)


def main(argv: Sequence[str] | None = None, prog: str = "python -m simulator") -> int:
    """Run the simulator until SIGTERM or SIGINT; return the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    try:
        asyncio.run(_run(config))
    except OSError as e:
        sys.stderr.write(f"{prog}: error: cannot listen on {config.host}:{config.port}: {e}\n")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
