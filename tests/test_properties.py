"""Bad input, generated: every bad value is one clear line and nothing is enqueued.

Hypothesis draws bad job specs for ``submit_batch``, bad settings (environment and
explicit arguments) and bad command lines for ``genfleet submit ...``. Only invalid
values are drawn, so a job that was enqueued is a defect, never a valid example.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genfleet import constants as C
from genfleet.errors import InputError, SettingsError
from genfleet.settings import Settings, load_settings
from producer.cli import main
from producer.pipelines import submit_batch
from tests.conftest import genfleet_cmd
from tests.test_hostile import capped_child, memory_cap
from workers.items import ITEM_KINDS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GPU_QUEUES = [f"{C.QUEUE_IMAGES_GPU_PREFIX}{n}" for n in range(C.DEFAULT_IMAGE_GPU_QUEUES)]
QUEUES = (C.QUEUE_LLM, C.QUEUE_CONTROL, C.QUEUE_IMAGES, *GPU_QUEUES)

IN_PROCESS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SUBPROCESS = settings(IN_PROCESS, max_examples=12)


def nothing_enqueued(r: redis.Redis) -> bool:
    return (
        all(r.llen(q) == 0 for q in QUEUES)
        and r.zcard(C.KEY_JOB_INDEX) == 0
        and not r.keys(f"{C.KEY_PREFIX}:job:*")
    )


def assert_one_line(message: str) -> None:
    assert message.strip(), "an empty error message"
    assert "\n" not in message.strip() and "\r" not in message, repr(message)
    assert "Traceback" not in message
    assert len(message) < 400, f"{len(message)} characters: {message[:200]!r}..."


# ---------------------------------------------------------------- submit_batch

VALID_BATCH: dict[str, Any] = dict(
    kind="cloze", lang="ja", levels=[3], topics=["Daily life"], per_combo=2, batch_size=3,
    concurrency=4, retries=2, throttle_ms=0, model=None,
)  # fmt: skip

BLANK = st.text(alphabet=" \t\n\r\x0b\x0c\u3000\u00a0", max_size=4)  # "" included
NOT_TEXT = st.one_of(
    st.integers(), st.floats(), st.booleans(), st.binary(max_size=4),
    st.lists(st.text(max_size=3), max_size=2),
)  # fmt: skip
NOT_INT = st.one_of(
    st.none(), st.booleans(), st.floats(), st.text(max_size=5),
    st.integers().map(str), st.lists(st.integers(), max_size=2),
)  # fmt: skip
WHITESPACE = st.sampled_from(" \t\n\r\u3000")


def out_of(low: int, high: int) -> st.SearchStrategy[Any]:
    """An int outside ``low..high``, or something that is not an int at all."""
    return st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1), NOT_INT)


def with_bad_item(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """A list of good items with one bad item somewhere in it."""
    return st.tuples(st.lists(good, max_size=3), bad, st.integers(0, 3)).map(
        lambda t: [*t[0][: t[2]], t[1], *t[0][t[2] :]]
    )


def non_blank(max_size: int) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=max_size).filter(str.strip)


BAD_LEVEL = out_of(1, 20)
BAD_TOPIC = st.one_of(
    BLANK,
    st.text(min_size=201, max_size=260).filter(str.strip),
    st.tuples(non_blank(5), st.sampled_from("\n\r\x00\x1b\u2028"), non_blank(5)).map("".join),
    NOT_TEXT,
)
NOT_A_LIST = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.sets(st.integers(1, 3)))
BAD_BATCH: dict[str, st.SearchStrategy[Any]] = {
    "kind": st.one_of(st.text(max_size=12).filter(lambda k: k not in ITEM_KINDS), NOT_TEXT),
    "lang": st.one_of(
        BLANK, st.text(min_size=21, max_size=40).filter(str.strip), NOT_TEXT, st.none()
    ),  # fmt: skip
    "levels": st.one_of(
        st.just([]),
        st.lists(st.integers(1, 20), min_size=21, max_size=25),
        st.integers(1, 20).map(lambda n: [n, n]),
        with_bad_item(st.integers(1, 20), BAD_LEVEL),
        NOT_A_LIST,
    ),
    "topics": st.one_of(
        st.just([]),
        st.just(["topic"] * 1001),
        with_bad_item(non_blank(10).filter(str.isprintable), BAD_TOPIC),
        NOT_A_LIST,
    ),
    "per_combo": out_of(1, 1000),
    "batch_size": out_of(1, 10),
    "concurrency": out_of(1, 8),
    "retries": out_of(0, 5),
    "throttle_ms": out_of(0, 2000),
    "model": st.one_of(
        BLANK,
        st.text(min_size=201, max_size=240).filter(lambda m: not any(c.isspace() for c in m)),
        st.tuples(non_blank(5), WHITESPACE, non_blank(5)).map("".join),
        NOT_TEXT,
    ),
}


@pytest.mark.parametrize("field", sorted(BAD_BATCH))
@IN_PROCESS
@given(data=st.data())
def test_bad_batch_argument_is_one_line_and_nothing_enqueued(
    env: dict[str, str], r: redis.Redis, field: str, data: st.DataObject
) -> None:
    r.flushdb()  # each example judged on its own
    value = data.draw(BAD_BATCH[field], label=field)
    with pytest.raises(InputError) as info:
        submit_batch(**{**VALID_BATCH, field: value})
    message = str(info.value)
    assert_one_line(message)
    assert field.removesuffix("s") in message, message  # "levels" may say "level 3 ..."
    assert nothing_enqueued(r)


# ---------------------------------------------------------------- settings


def _bounds(info: Any) -> tuple[float, bool, float]:
    """(low, low is exclusive, high) of a numeric settings field."""
    low, low_open, high = -math.inf, False, math.inf
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = float(item.ge)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Gt):
            low, low_open = float(item.gt), True  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le):
            high = float(item.le)  # type: ignore[arg-type]
    return low, low_open, high


NUMERIC = {
    name: (info.annotation, *_bounds(info))
    for name, info in Settings.model_fields.items()
    if info.annotation in (int, float)
}
ENV_TEXT = st.characters(blacklist_categories=("Cs", "Nd"), blacklist_characters="\x00")


def out_of_range(name: str) -> st.SearchStrategy[Any]:
    kind, low, low_open, high = NUMERIC[name]
    if kind is int:
        below = st.integers(max_value=int(low) if low_open else int(low) - 1)
        return st.one_of(below, st.integers(min_value=int(high) + 1))
    below_f = st.floats(max_value=low, exclude_max=not low_open)
    return st.one_of(below_f, st.floats(min_value=high, exclude_min=True), st.just(math.nan))


def not_numeric() -> st.SearchStrategy[str]:
    """Texts without a digit (NaN and infinity are out of every range anyway)."""
    return st.text(ENV_TEXT, max_size=30)


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def assert_settings_error(info: pytest.ExceptionInfo[SettingsError], variable: str) -> None:
    message = str(info.value)
    assert_one_line(message)
    assert message.startswith(f"{variable}=") and " is invalid" in message, message
    allowed = re.search(r"allowed (?:above )?(-?[\d.]+)(?:-| up to )([\d.]+)$", message)
    assert allowed, message  # every numeric setting states its range


def _claims_allowed(message: str, value: Any) -> bool:
    """True if the message's stated range holds ``value`` (a lying message)."""
    found = re.search(r"allowed (above )?(-?[\d.]+)(?:-| up to )([\d.]+)$", message)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    if found is None or math.isnan(number):
        return False
    low, high = float(found[2]), float(found[3])
    return (number > low if found[1] else number >= low) and number <= high


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper() in {n.upper() for n in NUMERIC} | {"MAX_CONCURRENT"}:
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
@settings(IN_PROCESS, max_examples=120)
@given(data=st.data())
def test_bad_numeric_setting_is_one_line_naming_the_variable(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(NUMERIC)), label="setting")
    value = data.draw(st.one_of(out_of_range(name), not_numeric()), label="value")
    variable = name.upper()
    with environment(variable, str(value)), pytest.raises(SettingsError) as info:
        load_settings()
    assert_settings_error(info, variable)
    assert not _claims_allowed(str(info.value), value), str(info.value)
    with pytest.raises(SettingsError) as info:
        load_settings(**{name: value})
    assert_settings_error(info, variable)
    assert not _claims_allowed(str(info.value), value), str(info.value)


@pytest.mark.usefixtures("clean_env")
@IN_PROCESS
@given(value=st.one_of(st.integers(max_value=0).map(str), not_numeric()))
def test_an_alias_is_named_as_the_user_wrote_it(value: str) -> None:
    with environment("MAX_CONCURRENT", value), pytest.raises(SettingsError) as info:
        load_settings()
    assert_settings_error(info, "MAX_CONCURRENT")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LLM_MAX_RETRIES", "1\n2"), ("LLM_TIMEOUT_S", "0"), ("RESULT_TTL_S", "x" * 5000)],
)
def test_bad_setting_on_the_command_line_is_one_line(
    env: dict[str, str], r: redis.Redis, variable: str, value: str
) -> None:
    out = subprocess.run(
        genfleet_cmd("submit", "chapter", "--project", "p", "--chapter", "1", "--outline-file",
                     OUTLINE),  # fmt: skip
        env={**env, variable: value}, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2
    assert_one_line(out.stderr)
    assert out.stderr.startswith(f"genfleet: {variable}=") and out.stdout == ""
    assert nothing_enqueued(r)


# ---------------------------------------------------------------- command line


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


BAD_FILES: dict[str, bytes | str | None] = {  # None: not created
    "missing": None,
    "folder": "",
    "empty": b"",
    "spaces": b"  \n\t\n",
    "binary": b"\xff\xfe\x00\x81 not text",
    "zero": "/dev/zero",
    "deep_json": b"[" * 200_000,
    "json_scalar": b"42",
    "json_texts": b'["a prompt", ""]',
    "json_numbers": b"[1, 2]",
    "json_empty_list": b"[]",
    "comments_only": b"# nothing\n\n# here\n",
    "long_line": b"x" * 5001,
    "long_outline": b"x" * (C.MAX_OUTLINE_CHARS + 1),
    "control": b"a topic\x01with a control character\n",
    "many_lines": b"topic\n" * 1001,
    "persona_no_name": json.dumps({"core": {}}).encode(),
    "calendar_bad_date": json.dumps({"calendar": {"2026-13-40": {"theme": "x"}}}).encode(),
    "calendar_empty": json.dumps({"calendar": {}}).encode(),
    "text": b"# not an image\n",
    "bomb": _png(100_000, 100_000),
    "truncated_png": _png(8, 8)[:30],
}
FILES_FOR = {
    "outline": ["missing", "folder", "empty", "spaces", "binary", "zero", "long_outline"],
    "topics": ["missing", "folder", "empty", "spaces", "binary", "zero", "comments_only",
               "long_line", "control", "many_lines"],
    "persona": ["missing", "folder", "empty", "binary", "zero", "deep_json", "json_scalar",
                "persona_no_name", "calendar_empty"],
    "calendar": ["missing", "folder", "empty", "binary", "zero", "deep_json", "json_scalar",
                 "persona_no_name", "calendar_bad_date", "calendar_empty"],
    "image": ["missing", "folder", "empty", "text", "binary", "zero", "bomb", "truncated_png"],
    "prompts": ["missing", "folder", "empty", "spaces", "binary", "zero", "deep_json",
                "json_texts", "json_numbers", "json_empty_list", "long_line"],
}  # fmt: skip


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "bad"
    folder.mkdir()
    paths = {}
    for name, content in BAD_FILES.items():
        path = folder / name
        if name == "folder":
            path.mkdir()
        elif isinstance(content, str):
            path = Path(content)
        elif content is not None:
            path.write_bytes(content)
        paths[name] = str(path)
    return paths


ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=10)  # fmt: skip


def not_int_in(low: int, high: int) -> st.SearchStrategy[str]:
    def bad(text: str) -> bool:
        try:
            return not low <= int(text) <= high
        except ValueError:
            return True

    return st.one_of(
        st.integers(max_value=low - 1).map(str), st.integers(min_value=high + 1).map(str),
        ARG_TEXT.filter(bad),
    )  # fmt: skip


def _levels_ok(text: str) -> bool:
    try:
        levels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        return False
    distinct = len(set(levels)) == len(levels)
    return 0 < len(levels) <= 20 and distinct and all(1 <= n <= 20 for n in levels)


TOPICS = str(EXAMPLES / "topics.txt")
OUTLINE = str(EXAMPLES / "outline.txt")
PERSONA = str(EXAMPLES / "personas" / "mika.json")
CALENDAR = str(EXAMPLES / "calendars" / "mika.json")
FACE = str(EXAMPLES / "face.png")
BASE_ARGS = {
    "batch": ["--kind", "cloze", "--lang", "ja", "--levels", "3", "--topics-file", TOPICS],
    "chapter": ["--project", "p", "--chapter", "1", "--versions", "1", "--outline-file", OUTLINE],
    "tweets": ["--persona", PERSONA, "--calendar", CALENDAR, "--count", "2"],
    "persona": ["--image", FACE],
    "images": ["--prompts-file", "PROMPTS"],  # replaced by a good prompts file
}
BAD_OPTIONS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "batch": {
        "--kind": ARG_TEXT.filter(lambda k: k not in ITEM_KINDS),
        "--lang": st.one_of(BLANK, st.text(min_size=21, max_size=30).filter(str.strip)),
        "--levels": ARG_TEXT.filter(lambda t: not _levels_ok(t)),
        "--per-combo": not_int_in(1, 1000),
        "--batch-size": not_int_in(1, 10),
        "--concurrency": not_int_in(1, 8),
        "--retries": not_int_in(0, 5),
        "--throttle-ms": not_int_in(0, 2000),
        "--model": st.one_of(BLANK, st.tuples(non_blank(4), WHITESPACE, non_blank(4)).map("".join)),
        "--topics-file": st.sampled_from(FILES_FOR["topics"]),
    },
    "chapter": {
        "--project": st.one_of(BLANK, st.text(min_size=65, max_size=80).filter(str.strip)),
        "--chapter": not_int_in(1, 100_000),
        "--versions": not_int_in(1, 10),
        "--outline-file": st.sampled_from(FILES_FOR["outline"]),
    },
    "tweets": {
        "--count": not_int_in(1, 1000),
        "--gpu": not_int_in(0, 7),
        "--persona": st.sampled_from(FILES_FOR["persona"]),
        "--calendar": st.sampled_from(FILES_FOR["calendar"]),
        "--personas": st.just("/nowhere/*.json"),  # given alongside --persona
        "--persona-job": st.one_of(st.just("persona-000000000000"), st.just("bad id!")),
    },
    "persona": {
        "--image": st.sampled_from(FILES_FOR["image"]),
        "--images": st.one_of(st.just("/nowhere/*.png"), st.just(FACE)),  # with --image
    },
    "images": {
        "--prompts-file": st.sampled_from(FILES_FOR["prompts"]),
        "--gpu": not_int_in(0, 7),
        "--out": st.just(FACE),  # a file, not a folder
    },
}
FILE_OPTIONS = {"--topics-file", "--outline-file", "--persona", "--calendar", "--image",
                "--prompts-file"}  # fmt: skip
EXTRA = st.sampled_from([["--bogus"], ["--wait", "extra-argument"], ["--kind"], ["-x", "1"]])


@st.composite
def bad_command(draw: st.DrawFn, files: dict[str, str], prompts: str) -> list[str]:
    """``submit COMMAND`` with one option made bad (or a bogus/missing one)."""
    command = draw(st.sampled_from(sorted(BASE_ARGS)))
    args = [prompts if a == "PROMPTS" else a for a in BASE_ARGS[command]]
    if draw(st.integers(0, 9)) == 0:
        if draw(st.booleans()):
            return ["submit", command, *args, *draw(EXTRA)]
        return ["submit", command, *args[2:]]  # the first (required) option left out
    option = draw(st.sampled_from(sorted(BAD_OPTIONS[command])), label="option")
    value = draw(BAD_OPTIONS[command][option], label=option)
    if option in FILE_OPTIONS:
        value = files[value]
    if option in args and option not in ("--personas", "--images"):
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    return ["submit", command, *args]


@pytest.fixture
def prompts_file(tmp_path: Path) -> str:
    path = tmp_path / "prompts.txt"
    path.write_text("a red kite over a harbour\n")
    return str(path)


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info, memory_cap():
        main(argv)
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


@IN_PROCESS
@given(data=st.data())
def test_bad_submit_command_is_one_line_and_nothing_enqueued(
    env: dict[str, str], r: redis.Redis, bad_files: dict[str, str], prompts_file: str,
    capsys: pytest.CaptureFixture[str], data: st.DataObject,
) -> None:  # fmt: skip
    r.flushdb()
    argv = data.draw(bad_command(bad_files, prompts_file), label="argv")
    code, out, err = _run_main(argv, capsys)
    assert code != 0, (argv, out)
    assert out == "", (argv, out)  # no job id
    assert_one_line(err)
    assert err.startswith("genfleet: "), err
    assert nothing_enqueued(r), argv


@pytest.mark.slow  # a long fault or load test: `pytest -m slow`
@SUBPROCESS
@given(data=st.data())
def test_bad_submit_command_in_a_real_process(
    env: dict[str, str], r: redis.Redis, bad_files: dict[str, str], prompts_file: str,
    data: st.DataObject,
) -> None:  # fmt: skip
    r.flushdb()
    argv = data.draw(bad_command(bad_files, prompts_file), label="argv")
    out = subprocess.run(
        genfleet_cmd(*argv), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
        preexec_fn=capped_child,
    )  # fmt: skip
    assert out.returncode != 0, (argv, out.stdout)
    assert out.stdout == "", (argv, out.stdout)
    assert_one_line(out.stderr)
    assert out.stderr.startswith("genfleet: "), out.stderr
    assert nothing_enqueued(r), argv
