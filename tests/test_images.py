"""Image jobs end to end: real Redis, real Celery workers, the simulator over HTTP.

Image workers here are CPU processes with made-up GPU indices: what is checked is
the routing (``images.gpuN``), the shared queue, the backends' code paths, retries,
the cluster-wide cap and the command line, not GPU speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from PIL import Image

from genfleet import constants as C
from genfleet.errors import SettingsError
from producer.images import read_prompts_file, submit_images
from tests.conftest import Workers, child_pids, genfleet_cmd, pid_alive
from workers.images.base import ImageRequest
from workers.images.gpus import detect_gpus, worker_queues
from workers.images.simplify import simplify_prompt

PROMPTS = ["a red barn in the snow", "a blue boat on a lake", "a green hill at noon"]
FORBIDDEN = "a forbidden castle on a hill, at dusk"
GPU_EXTRA = "the diffusers backend needs the gpu extra: pip install -e '.[gpu]'"


def _gpu_workers(workers: Workers, *gpus: int, **env: object) -> None:
    """One solo worker per made-up GPU, as 'genfleet worker images' starts them."""
    for gpu in gpus:
        workers.start(
            name=f"gpu{gpu}", queues=tuple(worker_queues(gpu)), concurrency=1, pool="solo",
            CUDA_VISIBLE_DEVICES=gpu, GENFLEET_GPU=gpu, **env,
        )  # fmt: skip


def _by_step(handle) -> dict[str, dict]:
    return {r["step_id"]: r for r in handle.results()}


def _nothing_enqueued(r: redis.Redis) -> bool:
    queues = [C.QUEUE_IMAGES, *(f"images.gpu{n}" for n in range(8))]
    return all(r.llen(q) == 0 for q in queues) and r.zcard(C.KEY_JOB_INDEX) == 0


# --- routing and the shared queue (placeholder backend) -------------------------------


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_pinned_images_run_on_their_gpu_worker(workers: Workers, home: Path) -> None:
    _gpu_workers(workers, 0, 1)
    for gpu in (1, 0):
        handle = submit_images(PROMPTS, gpu=gpu)
        assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
        for result in handle.results():
            out = result["output"]
            assert out["gpu"] == gpu and result["worker"].startswith(f"gpu{gpu}@")
            assert out["backend"] == "placeholder" and out["placeholder"] is True
            assert (out["width"], out["height"]) == (512, 512)
            assert Path(out["path"]).parent == home / "outputs" / handle.id
            with Image.open(out["path"]) as image:
                assert image.size == (512, 512)
                assert image.text["genfleet:placeholder"] == "true"
                assert image.text["genfleet:prompt"] == out["prompt"]


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_unpinned_batch_is_shared_by_both_workers(workers: Workers, tmp_path: Path) -> None:
    _gpu_workers(workers, 0, 1, GENFLEET_PLACEHOLDER_DELAY_S=0.3)
    prompts = [f"picture number {n}" for n in range(8)]
    handle = submit_images(prompts, out_dir=tmp_path / "pictures")
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    results = handle.results()
    assert {r["output"]["gpu"] for r in results} == {0, 1}
    assert {r["worker"].split("@")[0] for r in results} == {"gpu0", "gpu1"}
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == [
        f"{n:04d}-img{n + 1}.png" for n in range(8)
    ]


# --- the diffusers backend on a tiny random pipeline (CPU) -----------------------------


def _tiny_pipeline(root: Path) -> Path:
    """A Stable Diffusion pipeline with random weights from tiny configs, saved to disk."""
    torch = pytest.importorskip("torch", reason=GPU_EXTRA)
    diffusers = pytest.importorskip("diffusers", reason=GPU_EXTRA)
    transformers = pytest.importorskip("transformers", reason=GPU_EXTRA)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in ("a", "red", "cat", "on", "hill"):
        vocab[word + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"),
        model_max_length=16,
    )  # fmt: skip
    torch.manual_seed(0)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
        pad_token_id=1,
    ))  # fmt: skip
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64), latent_channels=4, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=diffusers.DDIMScheduler(clip_sample=False, steps_offset=1), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(root / "tiny-sd")
    return root / "tiny-sd"


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_diffusers_backend_on_a_tiny_cpu_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("diffusers", reason=GPU_EXTRA)
    from workers.images.diffusers_backend import DiffusersBackend
    from workers.images.generate import generate_image

    with pytest.raises(SettingsError, match="IMAGE_MODEL=.*no such model folder"):
        DiffusersBackend(str(tmp_path / "missing"))
    backend = DiffusersBackend(str(_tiny_pipeline(tmp_path)), steps=2)
    assert backend.device == "cpu" and str(backend.pipe.unet.dtype) == "torch.float32"
    request = ImageRequest("a red cat on a hill", 32, 32, seed=7)
    first = generate_image(backend, request, max_retries=0)
    again = generate_image(backend, request, max_retries=0)
    assert first.rendered.image.size == (32, 32) and first.attempts == 1
    assert first.rendered.image.tobytes() == again.rendered.image.tobytes()  # seeded
    assert first.rendered.model == "tiny-sd" and backend.placeholder is False


# --- API backends against the simulator ------------------------------------------------


def test_openai_backend_with_a_moderation_rejection(sim, workers: Workers, monkeypatch) -> None:
    monkeypatch.setenv("IMAGE_BACKEND", "openai")
    monkeypatch.setenv("IMAGE_BASE_URL", sim.base_url)
    monkeypatch.setenv("IMAGE_SIZE", "64x48")
    _gpu_workers(workers, 0)
    handle = submit_images([PROMPTS[0], FORBIDDEN, "forbidden"])
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_PARTIAL
    steps = _by_step(handle)
    plain, tamed, refused = steps["img1"], steps["img2"], steps["img3"]
    assert plain["ok"] and plain["output"]["simplified_prompt"] is None
    assert (plain["output"]["width"], plain["output"]["height"]) == (64, 48)
    assert tamed["ok"] and tamed["attempts"] == 2
    assert tamed["output"]["prompt"] == FORBIDDEN
    assert tamed["output"]["simplified_prompt"] == "a castle on a hill"
    assert not refused["ok"] and refused["error_type"] == "ContentPolicyError"
    assert "cannot be simplified" in refused["error"]
    stats = sim.stats()
    assert stats["by_status"] == {"200": 2, "400": 2}
    assert "test-key-0001" not in json.dumps(handle.results())


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_async_task_backend_polls_until_done(sim, workers: Workers, monkeypatch) -> None:
    sim.configure(image_task_seconds=0.6)
    monkeypatch.setenv("IMAGE_BACKEND", "async-task")
    monkeypatch.setenv("IMAGE_BASE_URL", sim.base_url)
    monkeypatch.setenv("IMAGE_GENERATION_POLL_INTERVAL", "0.1")
    _gpu_workers(workers, 0)
    handle = submit_images([PROMPTS[1], FORBIDDEN])
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    steps = _by_step(handle)
    assert steps["img1"]["output"]["backend"] == "async-task"
    assert steps["img2"]["output"]["simplified_prompt"] == "a castle on a hill"
    by_path = sim.stats()["by_path"]
    assert by_path["/v1/images/tasks"] == 3  # img1, img2 refused, img2 simplified
    assert by_path["/v1/images/tasks/{task_id}"] >= 4  # polled while pending


@pytest.mark.slow  # a long fault or load test: `pytest -m slow`
def test_async_task_times_out_after_max_wait(sim, workers: Workers, monkeypatch) -> None:
    sim.configure(image_task_seconds=30)
    monkeypatch.setenv("IMAGE_BACKEND", "async-task")
    monkeypatch.setenv("IMAGE_BASE_URL", sim.base_url)
    monkeypatch.setenv("IMAGE_GENERATION_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("IMAGE_GENERATION_MAX_WAIT_TIME", "1")
    monkeypatch.setenv("IMAGE_GENERATION_MAX_RETRIES", "1")
    _gpu_workers(workers, 0)
    handle = submit_images([PROMPTS[2]])
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_FAILED
    step = _by_step(handle)["img1"]
    assert step["error_type"] == "ImageGenerationError" and step["attempts"] == 2
    assert "did not finish within 1s" in step["error"]
    assert sim.stats()["by_path"]["/v1/images/tasks"] == 2  # the first try and one retry


@pytest.mark.slow  # a long fault or load test: `pytest -m slow`
def test_cluster_wide_cap_on_image_calls(sim, workers: Workers, monkeypatch) -> None:
    sim.configure(latency_ms=300)
    monkeypatch.setenv("IMAGE_BACKEND", "openai")
    monkeypatch.setenv("IMAGE_BASE_URL", sim.base_url)
    monkeypatch.setenv("IMAGE_SIZE", "32x32")
    monkeypatch.setenv("IMAGE_GENERATION_MAX_CONCURRENT", "2")
    for name in ("api-a", "api-b"):  # 6 slots between them, 2 calls allowed at once
        workers.start(name=name, queues=(C.QUEUE_IMAGES, C.QUEUE_CONTROL), concurrency=3)
    sim.reset()
    handle = submit_images([f"a lighthouse, view {n}" for n in range(8)])
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["max_in_flight"] == 2
    assert {r["worker"].split("@")[0] for r in handle.results()} == {"api-a", "api-b"}


@pytest.mark.slow
def test_an_image_slot_is_a_short_lease_renewed_while_the_call_runs(
    sim, workers: Workers, monkeypatch, r: redis.Redis
) -> None:
    sim.configure(latency_ms=int((C.LEASE_S + 4) * 1000))  # each call outlives a lease
    monkeypatch.setenv("IMAGE_BACKEND", "openai")
    monkeypatch.setenv("IMAGE_BASE_URL", sim.base_url)
    monkeypatch.setenv("IMAGE_SIZE", "32x32")
    monkeypatch.setenv("IMAGE_GENERATION_MAX_CONCURRENT", "1")
    workers.start(name="slot", queues=(C.QUEUE_IMAGES, C.QUEUE_CONTROL), concurrency=2)
    sim.reset()
    handle = submit_images(["a lighthouse at dawn", "a lighthouse at dusk"])
    deadline = time.monotonic() + 60
    while sim.stats()["in_flight"] < 1:
        assert time.monotonic() < deadline, "no image call started"
        time.sleep(0.1)
    seconds, micros = r.time()
    lease_keys = [k for k in r.scan_iter(f"{C.KEY_LIMITER_PREFIX}:*:leases") if ":job:" not in k]
    expiries = [score for key in lease_keys for _, score in r.zrange(key, 0, -1, withscores=True)]
    # A dead worker's slot would come back within LEASE_S, not after the call's timeout.
    assert expiries and max(expiries) <= seconds + micros / 1e6 + C.LEASE_S + 0.5
    assert handle.wait(timeout=120, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["max_in_flight"] == 1  # renewed past LEASE_S: the cap held throughout


# --- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "args", "extra_env", "needle"),
    [
        ("\n  \n", (), {}, "no prompts"),
        ("x" * 4001, (), {}, "prompt 1 has 4001 characters: allowed at most 4000"),
        ('["a cat", 3]', (), {}, "must be a list of texts"),
        ("a cat\n", ("--gpu", "8"), {}, "gpu=8 is not a GPU index: allowed 0-7"),
        ("a cat\n", (), {"IMAGE_BACKEND": "diffusers", "IMAGE_MODEL": "/no/such/model"},
         "IMAGE_MODEL=/no/such/model: no such model folder"),
        (None, (), {}, "no such file"),
        ("a cat\n", ("--mode", "batch"), {}, "allowed online (the Batch API carries LLM calls"),
        ("a cat\n", ("--max-cost", "2"), {}, "invalid for an image job: allowed none"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_nothing_enqueued(
    env, r, tmp_path: Path, content, args, extra_env, needle
) -> None:
    prompts = tmp_path / "prompts.txt"
    if content is not None:
        prompts.write_text(content)
    out = subprocess.run(
        genfleet_cmd("submit", "images", "--prompts-file", str(prompts), *args),
        env={**env, **extra_env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert _nothing_enqueued(r)


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
@pytest.mark.parametrize(
    ("gpus", "extra_env", "needle"),
    [
        pytest.param("auto", {}, "no GPU found", marks=pytest.mark.skipif(
            bool(detect_gpus()), reason="this machine has a GPU")),
        ("0,9", {}, "not a GPU index"),
        ("1,1", {}, "twice"),
        ("0", {"IMAGE_BACKEND": "diffusers", "IMAGE_MODEL": "/no/such/model"},
         "IMAGE_MODEL=/no/such/model: no such model folder"),
    ],
)  # fmt: skip
def test_worker_images_refuses_bad_gpus_and_settings(env, gpus, extra_env, needle) -> None:
    out = subprocess.run(
        genfleet_cmd("worker", "images", "--gpus", gpus),
        env={**env, **extra_env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_worker_images_command_serves_its_gpu_and_stops(env, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    cli = subprocess.Popen(
        genfleet_cmd("worker", "images", "--gpus", "1", "--loglevel", "INFO"),
        env={**env, "GENFLEET_READY_FILE": str(ready)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and cli.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), "the GPU worker did not become ready"
        children = child_pids(cli.pid)
        assert len(children) == 1
        handle = submit_images(PROMPTS[:2], gpu=1)
        assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
        assert all(r["output"]["gpu"] == 1 for r in handle.results())
        assert all(r["worker"].startswith(f"gpu1-{cli.pid}@") for r in handle.results())
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
        assert not any(pid_alive(pid) for pid in children)
    finally:
        for pid in [cli.pid, *children]:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        cli.wait()


# --- plain logic -----------------------------------------------------------------------


def test_prompt_simplification_is_deterministic() -> None:
    assert simplify_prompt(FORBIDDEN) == "a castle on a hill"
    assert simplify_prompt("A beautifully lit barn; rain") == "A lit barn"
    assert simplify_prompt("一座被禁止的寺庙，夜晚") == "寺庙"
    assert simplify_prompt("forbidden") is None  # nothing left to drop
    assert simplify_prompt("a cat") is None


def test_prompts_file_as_lines_or_json(tmp_path: Path) -> None:
    lines = tmp_path / "p.txt"
    lines.write_text("a cat\n\n  a dog  \n")
    assert read_prompts_file(lines) == ["a cat", "a dog"]
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps(["a cat, sleeping", "a dog"]))
    assert read_prompts_file(as_json) == ["a cat, sleeping", "a dog"]
