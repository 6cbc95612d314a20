"""The embedded Redis is a real redis-server: started, shared, persisted, stopped."""

from __future__ import annotations

from pathlib import Path

import redis

from genfleet.embedded import EmbeddedRedis
from tests.conftest import pid_alive


def test_start_reuse_persist_and_stop(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    assert first.owned and first.process is not None
    pid = first.process.pid
    client = redis.Redis.from_url(url)
    assert client.info("server")["redis_version"]
    assert client.config_get("bind")["bind"].startswith("127.0.0.1")
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.set("kept", "yes")

    second = EmbeddedRedis(tmp_path)
    assert second.start() == url
    assert not second.owned  # attached, not started
    second.stop()
    assert pid_alive(pid)

    first.stop()
    assert not pid_alive(pid)
    assert not (tmp_path / "redis" / "redis.json").exists()
    client.close()

    third = EmbeddedRedis(tmp_path)
    url3 = third.start()
    try:
        assert redis.Redis.from_url(url3).get("kept") == b"yes"  # the AOF survived the restart
    finally:
        third.stop()


def test_stale_state_file_starts_a_new_server(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "redis.json").write_text('{"url": "redis://127.0.0.1:1/0", "pid": 1}')
    emb = EmbeddedRedis(tmp_path)
    try:
        url = emb.start()
        assert url != "redis://127.0.0.1:1/0" and emb.owned
    finally:
        emb.stop()
