"""IMAGE_BACKEND=openai: an OpenAI-compatible ``POST {base}/images/generations``."""

from __future__ import annotations

import logging

import openai
import redis
from PIL import Image

from genfleet.errors import PermanentLLMError
from genfleet.settings import Settings
from workers.images.base import ImageRequest, Rendered
from workers.images.remote import (
    ImageSlots,
    decode_image,
    download,
    status_error,
    target_from_settings,
)
from workers.retry import classify

logger = logging.getLogger(__name__)


class OpenAIImageBackend:
    """One ``openai`` client (SDK retries off) under the cluster-wide image cap."""

    name = "openai"
    placeholder = False

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.target = target_from_settings(settings)
        self.model = self.target.model
        self.timeout_s = settings.image_generation_max_wait_time
        self.client = openai.OpenAI(
            api_key=self.target.key.secret,
            base_url=self.target.base_url,
            max_retries=0,
            timeout=self.timeout_s,
        )
        self.slots = ImageSlots(client, self.target.scope, settings.image_generation_max_concurrent)

    def generate(self, request: ImageRequest) -> Rendered:
        with self.slots.held(request) as waited:
            data = self._call(request)
        return Rendered(self._picture(data), self.model, self.target.key.key_id, round(waited, 4))

    def _call(self, request: ImageRequest) -> openai.types.Image:
        provider = self.target.base_url
        try:
            answer = self.client.images.generate(
                model=self.model,
                prompt=request.prompt,
                n=1,
                size=f"{request.width}x{request.height}",
            )
        except openai.APIStatusError as e:
            raise status_error(
                e.status_code, e.body, e.response.headers, provider=provider, model=self.model
            ) from e
        except openai.OpenAIError as e:
            raise classify(e, provider=provider, model=self.model) from e
        if not answer.data:
            raise PermanentLLMError(
                "the image API answered without a picture", provider=provider, model=self.model
            )
        return answer.data[0]

    def _picture(self, data: openai.types.Image) -> Image.Image:
        provider = self.target.base_url
        if data.b64_json:
            return decode_image(data.b64_json, provider=provider, model=self.model)
        if data.url:
            raw = download(data.url, self.timeout_s, provider=provider, model=self.model)
            return decode_image(raw, provider=provider, model=self.model)
        raise PermanentLLMError(
            "the image API answered without a picture", provider=provider, model=self.model
        )
