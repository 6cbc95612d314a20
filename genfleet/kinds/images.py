"""The images kind: one picture per prompt, on the image workers.

Step ids ``img1``, ``img2``, ...; a step's prompt is the job input
``prompt:{step_id}``. A step goes to ``images.gpuN`` when the job is pinned to GPU
N, else to the shared ``images`` queue. Other kinds chain image steps too (a tweet's
``X.image``), through ``image_signature``. Logic: ``workers.images.step``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from pydantic import Field

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.kinds.base import JobKind, SpecBase, TaskDef, register
from genfleet.records import JobRecord

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

MAX_PROMPT_CHARS = 4000  # OpenAI's image prompt limit for DALL-E 3
MAX_PROMPTS = 5000  # prompts in one job
MAX_GPU_INDEX = C.DEFAULT_IMAGE_GPU_QUEUES - 1  # images.gpu0 .. images.gpu7 are declared
IMAGE_STEP_SUFFIX = ".image"  # step "X.image" draws the picture of step "X"
IMAGE_TASK = TaskDef(
    C.TASK_IMAGE_GENERATE, "workers.images.step:run_image", "Draw the picture of one image step."
)


class ImagesSpec(SpecBase):
    count: int = Field(ge=1)
    gpu: int | None = Field(default=None, ge=0, le=MAX_GPU_INDEX)
    out_dir: str | None = None
    size: str


def step_id(index: int) -> str:
    """Prompt ``index`` (0-based) -> ``img{index + 1}``."""
    return f"img{index + 1}"


def prompt_input(step: str) -> str:
    """The name of the job input that holds an image step's prompt."""
    return f"prompt:{step}"


def check_gpu(gpu: object, what: str = "gpu") -> int:
    """``gpu`` as a declared GPU index (0..7), or ``InputError`` saying the range."""
    if isinstance(gpu, bool) or not isinstance(gpu, int) or not 0 <= gpu <= MAX_GPU_INDEX:
        raise InputError(
            f"{what}={gpu!r} is not a GPU index: allowed 0-{MAX_GPU_INDEX} "
            f"(the queues images.gpu0..images.gpu{MAX_GPU_INDEX})"
        )
    return gpu


def gpu_queue(gpu: int) -> str:
    """The queue only the worker of GPU ``gpu`` reads, e.g. ``images.gpu1``."""
    return f"{C.QUEUE_IMAGES_GPU_PREFIX}{gpu}"


def image_signature(
    app: Celery, job_id: str, step: str, index: int, gpu: int | None = None, round_: int = 0
) -> Signature:
    """One image step (immutable: it takes no parent's result), pinned to ``gpu``'s
    queue when given."""
    from genfleet.kinds.canvas import task_id_for

    sig = app.signature(C.TASK_IMAGE_GENERATE, args=(job_id, step, index), immutable=True)
    if gpu is not None:
        sig.set(queue=gpu_queue(check_gpu(gpu)))
    return sig.set(task_id=task_id_for(job_id, step, round_))


class ImagesKind(JobKind[ImagesSpec]):
    name = C.KIND_IMAGES
    spec_model = ImagesSpec
    tasks = (IMAGE_TASK,)
    counts_tokens = False

    def step_ids(self, spec: ImagesSpec) -> list[str]:
        return [step_id(n) for n in range(spec.count)]

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:
        gpu = self.spec(record).gpu
        return [
            image_signature(app, record.id, sid, n, gpu, round_)
            for n, sid in enumerate(record.step_ids)
            if sid in steps
        ]


KIND = register(ImagesKind())
