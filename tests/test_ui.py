"""``genfleet ui`` in headless Chromium against a real cluster (real workers, the
simulator over HTTP), plus its security rules over plain HTTP.

The browser is Debian's ``chromium`` driven by Selenium through ``chromedriver``
(``.ci/run`` installs both). ``GENFLEET_UI_SCREENSHOTS=docs`` writes the README's
screenshots of every view to ``docs/``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genfleet import constants as C
from producer.api import submit_chapter
from producer.client import connect
from producer.images import submit_images
from producer.pipelines import submit_batch, submit_persona, submit_tweets
from tests.conftest import ROOT, Workers, free_port, genfleet_cmd

EXAMPLES = ROOT / "examples"
# Read at import: the env fixture clears GENFLEET_* variables before each test.
SHOTS_TO_DOCS = os.environ.get("GENFLEET_UI_SCREENSHOTS") == "docs"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1000",
)  # fmt: skip
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
ECHO_MARK = "ECHO-THIS-PROMPT"
USER, PASSWORD = "editor", "s3cret-ui"
# Direct HTTP to the loopback UI, never through a proxy.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class UiServer:
    """``genfleet ui`` as a subprocess, stopped by PID."""

    def __init__(self, env: dict[str, str], log: Path, auth: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        child_env = {**env, "PYTHONUNBUFFERED": "1"}
        child_env.pop("GENFLEET_UI_AUTH", None)
        if auth:
            child_env["GENFLEET_UI_AUTH"] = auth
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                genfleet_cmd("ui", "--port", str(self.port)), env=child_env, cwd=ROOT,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while "genfleet ui on" not in log.read_text():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the UI did not start: " + log.read_text()
            time.sleep(0.1)

    def request(
        self, path: str, *, data: bytes | None = None, auth: bool = False
    ) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, data=data)
        if auth:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with OPENER.open(req, timeout=10) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def ui(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., UiServer]]:
    started: list[UiServer] = []

    def start(auth: str | None = None) -> UiServer:
        server = UiServer(dict(os.environ), tmp_path / f"ui{len(started)}.log", auth)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are missing (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true (the page updates by itself)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # an element replaced by a live update while being read
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def click(driver: Any, element_id: str) -> None:
    """Click a button of a live section (retried if an update replaced it meanwhile)."""

    def attempt() -> bool:
        driver.find_element("id", element_id).click()
        return True

    wait_for(attempt, f"#{element_id} to be clicked", timeout=20)


def text_of(driver: Any, element_id: str) -> str:
    return str(wait_for(lambda: driver.find_element("id", element_id).text, f"#{element_id}"))


def row_status(driver: Any, job_id: str) -> str | None:
    rows = css(driver, f'tr[data-job-id="{job_id}"]')
    return rows[0].get_attribute("data-status") if rows else None


def images_loaded(driver: Any, selector: str) -> list[int]:
    """The natural widths of the pictures (0 for one that did not load)."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " i => i.complete ? i.naturalWidth : -1)"
    )
    widths = driver.execute_script(script, selector)
    return widths if widths and all(w >= 0 for w in widths) else []


@pytest.fixture
def shot(browser: Any, tmp_path: Path) -> Callable[..., None]:
    """Screenshots go to the test's folder, or with GENFLEET_UI_SCREENSHOTS=docs to
    the README's pictures in docs/."""
    folder = ROOT / "docs" if SHOTS_TO_DOCS else tmp_path / "shots"
    folder.mkdir(exist_ok=True)

    def take(name: str, height: int = 1000) -> None:
        full = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, max(height, min(int(full) + 40, 2400)))
        browser.save_screenshot(str(folder / name))
        browser.set_window_size(1280, 1000)

    return take


@pytest.mark.slow
def test_jobs_and_content_in_a_browser_read_only(sim, workers: Workers, ui, browser, shot) -> None:
    # Version 2 of the chapter gets a permanent 400; the others echo their prompt,
    # so the model's answer holds the outline's <script>.
    sim.configure(
        fail_patterns={"candidate version 2 of 3": 400}, garbage_patterns={ECHO_MARK: "echo"}
    )
    workers.start("llm", concurrency=8)
    workers.start("img", queues=("images", "control"), concurrency=1)
    chapter = submit_chapter("ui-novel", 1, f"{ECHO_MARK}\n{HOSTILE}", versions=3)
    persona = submit_persona(EXAMPLES / "face.png")
    tweets = submit_tweets(
        EXAMPLES / "personas" / "mika.json", EXAMPLES / "calendars" / "mika.json", count=3,
        with_images=True,
    )  # fmt: skip
    for job in (chapter, persona, tweets):
        job.wait(timeout=120, progress=False)
    store = connect().store
    assert store.status(chapter.id) == C.STATUS_PARTIAL
    assert store.status(persona.id) == C.STATUS_SUCCEEDED
    assert store.status(tweets.id) == C.STATUS_SUCCEEDED
    server = ui()

    browser.get(server.url + "/jobs")
    for job in (chapter, persona, tweets):
        assert row_status(browser, job.id) == store.status(job.id)
    cost = css(browser, f'tr[data-job-id="{chapter.id}"] td.cost')[0].text
    assert cost.startswith("$") and float(cost[1:]) > 0  # the simulator's model has a price
    # Live: jobs submitted now appear and finish on the open page, without a reload.
    batch = submit_batch("cloze", "ja", [3], ["Campus", "Food"], per_combo=2, batch_size=2,
                         review=True)  # fmt: skip
    images = submit_images(["a lighthouse at dusk", "a red barn in the snow", HOSTILE])
    for job in (batch, images):
        wait_for(lambda j=job: row_status(browser, j.id) == C.STATUS_SUCCEEDED, f"{job.id} live")
    assert int(browser.find_element("id", "job-rows").get_attribute("data-updates")) >= 1
    shot("ui-jobs.png")

    browser.get(f"{server.url}/jobs?kind=persona")
    assert [r.get_attribute("data-job-id") for r in css(browser, "tr.job")] == [persona.id]

    # The chapter: three versions side by side, the failed one with its error;
    # the echoed <script> is text on the page and never ran.
    browser.get(f"{server.url}/jobs/{chapter.id}")
    versions = css(browser, ".version")
    assert [v.get_attribute("class").split()[1] for v in versions] == ["ok", "failed", "ok"]
    assert "400" in versions[1].find_element("css selector", ".error").text
    text = versions[0].find_element("css selector", ".text").text
    assert HOSTILE in text and "characters" in versions[0].text
    assert browser.execute_script("return window.__pwned === undefined")
    assert not css(browser, "#live script") and not css(browser, "#live img[src='x']")
    assert "400" in css(browser, 'tr.step.failed[data-step-id="v2"]')[0].text
    shot("ui-chapter.png")

    browser.get(f"{server.url}/jobs/{persona.id}")
    wait_for(lambda: images_loaded(browser, "img.portrait"), "the persona's image")
    assert images_loaded(browser, "img.portrait")[0] > 0
    sections = css(browser, ".persona-section")
    assert len(sections) == 7 and all(s.find_elements("css selector", "dl") for s in sections)
    shot("ui-persona.png")

    browser.get(f"{server.url}/jobs/{tweets.id}")
    assert len(css(browser, ".tweet")) == 3
    widths = wait_for(lambda: images_loaded(browser, ".tweet img.picture"), "tweet pictures")
    assert len(widths) == 3 and all(w > 0 for w in widths)
    shot("ui-tweets.png")

    browser.get(f"{server.url}/jobs/{batch.id}")
    assert len(css(browser, "table.items tbody tr")) == 4  # 2 topics x 2 items, draft | review
    assert len(css(browser, "table.items th")) == 6
    shot("ui-batch.png")

    browser.get(f"{server.url}/jobs/{images.id}")
    widths = wait_for(lambda: images_loaded(browser, ".gallery img.picture"), "the gallery")
    assert len(widths) == 3 and all(w > 0 for w in widths)
    assert HOSTILE in browser.find_element("css selector", ".gallery").text
    assert browser.execute_script("return window.__pwned === undefined")
    shot("ui-images.png")

    # Read-only: no action buttons, and a posted action is refused.
    browser.get(f"{server.url}/jobs/{chapter.id}")
    assert not css(browser, "#cancel") and not css(browser, "#resume")
    for action in ("cancel", "resume"):
        status, body = server.request(f"/jobs/{chapter.id}/{action}", data=b"token=x")
        assert status == 403 and "GENFLEET_UI_AUTH" in body
    assert store.status(chapter.id) == C.STATUS_PARTIAL


@pytest.mark.slow
def test_cancel_and_resume_in_a_browser_with_a_credential(
    env, workers: Workers, ui, browser, shot, monkeypatch
) -> None:
    from simulator.process import SimulatorProcess

    with SimulatorProcess(latency_ms=3000) as slow:
        monkeypatch.setenv("OPENAI_BASE_URL", slow.base_url)
        job = submit_chapter("ui-novel", 2, "A slow chapter.", versions=4)
        store = connect().store
        server = ui(auth=f"{USER}:{PASSWORD}")
        assert server.request("/jobs")[0] == 401
        wrong = urllib.request.Request(server.url + "/jobs")
        wrong.add_header("Authorization", "Basic " + base64.b64encode(b"editor:nope").decode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            OPENER.open(wrong, timeout=10)
        assert refused.value.code == 401
        assert server.request("/jobs", auth=True)[0] == 200
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        browser.get(f"{server.url}/jobs/{job.id}")
        assert text_of(browser, "job-status") == C.STATUS_QUEUED
        workers.start("llm", concurrency=1)  # one version at a time, 3 s each
        wait_for(lambda: store.progress(job.id).running, "a version to start")
        status, _ = server.request(f"/jobs/{job.id}/cancel", data=b"token=forged", auth=True)
        assert status == 403 and store.status(job.id) == C.STATUS_RUNNING
        click(browser, "cancel")
        wait_for(
            lambda: browser.find_element("id", "job-status").text == C.STATUS_CANCELLED,
            "the page to show the job cancelled",
        )
        assert store.status(job.id) == C.STATUS_CANCELLED
        shot("ui-cancelled.png", height=700)
        click(browser, "resume")
        wait_for(
            lambda: browser.find_element("id", "job-status").text == C.STATUS_SUCCEEDED,
            "the resumed job to succeed on the page",
            timeout=90,
        )
        view = store.load(job.id)
        assert len(view.ok) == 4 and not view.failed
        # Each version was asked once: cancel and resume re-ran nothing that had a result.
        assert sorted(slow.stats()["chat_by_prompt"].values()) == [1, 1, 1, 1]


def test_ui_refuses_a_network_address_without_a_credential(env) -> None:
    result = subprocess.run(
        genfleet_cmd("ui", "--host", "0.0.0.0", "--port", str(free_port())),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "GENFLEET_UI_AUTH" in result.stderr
    assert "Traceback" not in result.stderr


def test_ui_refuses_a_malformed_credential(env) -> None:
    result = subprocess.run(
        genfleet_cmd("ui", "--port", str(free_port())), capture_output=True, text=True,
        timeout=60, cwd=ROOT, env={**os.environ, "GENFLEET_UI_AUTH": "no-colon-here"},
    )  # fmt: skip
    assert result.returncode == 2 and "GENFLEET_UI_AUTH=(hidden) is invalid" in result.stderr
    assert "no-colon-here" not in result.stderr


def test_pictures_only_from_the_jobs_own_folder(env, ui, tmp_path: Path) -> None:
    from genfleet.records import JobRecord, StepResult

    out = tmp_path / "job-out"
    out.mkdir()
    png = (EXAMPLES / "face.png").read_bytes()
    (out / "0001-img1.png").write_bytes(png)
    (tmp_path / "secret.png").write_bytes(png)
    (out / "notes.txt").write_text("not a picture")
    (out / "link.png").symlink_to(tmp_path / "secret.png")
    paths = {
        "img1": out / "0001-img1.png",
        "img2": tmp_path / "secret.png",
        "img3": out / ".." / "secret.png",
        "img4": out / "notes.txt",
        "img5": out / "link.png",
    }
    store = connect().store
    record = JobRecord(id="images-uitest", kind=C.KIND_IMAGES, spec={"out_dir": str(out)},
                       step_ids=list(paths), created_at=time.time())  # fmt: skip
    store.create(record, {"image:p1": "data:text/html;base64,PHNjcmlwdD4="})
    for step_id, path in paths.items():
        store.save_step(record.id, StepResult(step_id=step_id, ok=True, output={"path": str(path)}))
    server = ui()
    assert server.request(f"/jobs/{record.id}/pictures/img1")[0] == 200
    for step_id in ("img2", "img3", "img4", "img5", "img9"):
        assert server.request(f"/jobs/{record.id}/pictures/{step_id}")[0] == 404, step_id
    assert server.request(f"/jobs/{record.id}/inputs/p1/image")[0] == 404  # not an image type
    assert server.request("/jobs/..%2F..%2Fetc/pictures/img1")[0] == 404
    status, page = server.request(f"/jobs/{record.id}")
    assert status == 200 and "img1" in page


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_downloads_are_the_results_commands_output(sim, workers: Workers, ui) -> None:
    workers.start("llm", concurrency=4)
    job = submit_chapter("ui-novel", 3, "Outline.", versions=2)
    job.wait(timeout=60, progress=False)
    server = ui()
    status, text = server.request(f"/jobs/{job.id}/results.json")
    assert status == 200 and json.loads(text)["job_id"] == job.id
    assert len(json.loads(text)["steps"]) == 2
    status, text = server.request(f"/jobs/{job.id}/results.jsonl")
    lines = [json.loads(line) for line in text.splitlines()]
    assert status == 200 and sorted(line["version"] for line in lines) == [1, 2]


def test_a_view_that_cannot_read_a_job_shows_its_outputs_escaped(env, ui) -> None:
    from genfleet.records import JobRecord, StepResult

    store = connect().store
    record = JobRecord(id="batch-uiodd", kind=C.KIND_BATCH, spec={"topics": ["x"]},
                       step_ids=["odd-step"], created_at=time.time())  # fmt: skip
    store.create(record)
    store.save_step(record.id, StepResult(step_id="odd-step", ok=True, output={"x": HOSTILE}))
    status, page = ui().request(f"/jobs/{record.id}")
    assert status == 200 and 'data-step-id="odd-step"' in page
    assert HOSTILE not in page and "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page


@pytest.mark.slow
def test_recipe_rows_and_stages_in_a_browser(sim, workers: Workers, ui, browser, shot) -> None:
    from producer.recipes import submit_recipe

    recipes = EXAMPLES / "recipes"
    rows = [json.loads(line) for line in (recipes / "products.jsonl").read_text().splitlines()]
    rows[0]["product"] = HOSTILE  # an input file's text is data too
    workers.start("llm", concurrency=8)
    job = submit_recipe(recipes / "product-blurbs.yaml", rows)
    job.wait(timeout=120, progress=False)
    assert connect().store.status(job.id) == C.STATUS_SUCCEEDED
    server = ui()
    browser.get(f"{server.url}/jobs/{job.id}")
    headers = [th.text for th in css(browser, "table.recipe th")]
    assert headers == ["row", "input", "facts", "blurb"]
    table_rows = css(browser, "table.recipe tbody tr")
    assert [r.get_attribute("data-row") for r in table_rows] == ["1", "2", "3"]
    for row in table_rows:
        cells = row.find_elements("css selector", "td.stage")
        assert len(cells[0].find_elements("css selector", ".stage-cell.ok")) == 1  # facts
        assert len(cells[1].find_elements("css selector", ".stage-cell.ok")) == 3  # 3 blurbs
    assert HOSTILE in table_rows[0].text
    assert browser.execute_script("return window.__pwned === undefined")
    shot("ui-recipe.png")
    status, text = server.request(f"/jobs/{job.id}/results.jsonl")
    lines = [json.loads(line) for line in text.splitlines()]
    assert status == 200 and [line["input"] for line in lines] == rows
