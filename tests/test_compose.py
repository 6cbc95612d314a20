"""docker-compose.yml is valid and says what the README promises.

Checked with ``docker-compose config`` (Debian's docker-compose package, which
.ci/run installs); it needs no Docker engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ENV = {"REDIS_PASSWORD": "s3cret-pw", "OPENAI_API_KEY": "sk-test", "FLOWER_BASIC_AUTH": "ops:pw"}

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (.ci/run installs Debian's package)",
)


def _config(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run(
        ["docker-compose", "--profile", "producer", "config"], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_compose_file_is_valid_and_complete() -> None:
    out = _config(ENV)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"redis", "llm-worker", "flower", "producer", "image-worker-gpu0"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert "--appendonly" in redis_cmd and "--requirepass" in redis_cmd
    worker = services["llm-worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale llm-worker=4
    # Unique node names per replica: %h is each container's own host name.
    assert "hostname" not in worker and "llm@%h" in worker["command"]
    assert "llm,control" in worker["command"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "ops:pw"
    gpu = services["image-worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["device_ids"] == ["0"]
    assert "images.gpu0" in " ".join(services["image-worker-gpu0"]["command"])


@pytest.mark.parametrize("missing", sorted(ENV))
def test_required_secrets_must_be_set(missing: str) -> None:
    out = _config({k: v for k, v in ENV.items() if k != missing})
    assert out.returncode != 0
    assert missing in out.stderr
