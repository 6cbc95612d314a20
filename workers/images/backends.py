"""The image backend of this worker process: chosen by ``IMAGE_BACKEND``, made once.

A diffusers pipeline takes seconds to minutes to load and gigabytes of GPU memory,
so the backend is created on first use and kept for the life of the process
(``reset_backend`` drops it in a freshly forked pool process).
"""

from __future__ import annotations

import threading

import redis

from genfleet.settings import Settings
from workers.images.base import ImageBackend

_lock = threading.Lock()
_backend: ImageBackend | None = None


def create_backend(settings: Settings, client: redis.Redis) -> ImageBackend:
    """A new backend for ``settings.image_backend``; raises ``SettingsError`` if unusable."""
    kind = settings.image_backend
    if kind == "openai":
        from workers.images.openai_backend import OpenAIImageBackend

        return OpenAIImageBackend(settings, client)
    if kind == "async-task":
        from workers.images.async_task import AsyncTaskBackend

        return AsyncTaskBackend(settings, client)
    if kind == "diffusers":
        from workers.images.diffusers_backend import DiffusersBackend

        return DiffusersBackend(settings.image_model)
    from workers.images.placeholder import PlaceholderBackend

    return PlaceholderBackend()


def check_backend_settings(settings: Settings) -> None:
    """Fail now, with one ``SettingsError`` line, where ``create_backend`` would fail
    later: a missing model folder or gpu extra, no API key, a bad base URL. Loads no
    model and calls no API."""
    kind = settings.image_backend
    if kind in ("openai", "async-task"):
        from workers.images.remote import target_from_settings

        target_from_settings(settings)
    elif kind == "diffusers":
        from workers.images.diffusers_backend import check_gpu_extra, check_model_dir

        check_model_dir(settings.image_model)
        check_gpu_extra()


def get_backend(settings: Settings, client: redis.Redis) -> ImageBackend:
    """The process's one backend (created on first use)."""
    global _backend
    with _lock:
        if _backend is None:
            _backend = create_backend(settings, client)
        return _backend


def reset_backend() -> None:
    """Forget the process's backend (a forked child must not share the parent's)."""
    global _backend
    with _lock:
        _backend = None
