"""The TPM limit end to end: real workers, Chinese and English prompts, and a provider
that counts tokens its own way (``simulator.tokens``: UTF-8 bytes / 4), not with the
gateway's estimator. A gateway that reserved too few tokens would get 429s here."""

from __future__ import annotations

import pytest

from genfleet import constants as C
from producer import submit_chapter
from tests.conftest import Workers

TPM = 3000
MAX_TOKENS = 50
CHINESE = (
    "灯塔守护者林月在风暴之夜收到一封来自远方的信，信上只写着她父亲的名字和一个从未见过的港口。"
    "她必须决定是否离开灯塔去寻找真相，而村里的渔民都在等待灯光指引他们回家。"
) * 3
ENGLISH = (
    "A lighthouse keeper receives, on the night of a storm, a letter that names her missing "
    "father and a harbour no chart shows. She must choose between leaving the light to find "
    "the truth and keeping it lit for the fishing boats still out at sea. "
) * 3


@pytest.mark.slow  # a load test: about two minutes of calls held to the TPM limit
def test_tpm_limit_holds_at_a_provider_that_counts_its_own_way(sim, workers: Workers) -> None:
    sim.configure(tpm=TPM, latency_ms=50, output_tokens=MAX_TOKENS)
    for name in ("w1", "w2"):
        workers.start(name, concurrency=4, LLM_TPM_LIMIT=TPM, LLM_MAX_TOKENS=MAX_TOKENS)
    handles = [
        submit_chapter("tpm-zh", 1, CHINESE, versions=6),
        submit_chapter("tpm-en", 1, ENGLISH, versions=6),
    ]
    views = [h.wait(timeout=400, progress=False) for h in handles]
    assert [v.status for v in views] == [C.STATUS_SUCCEEDED] * 2, [v.error for v in views]
    stats = sim.stats()
    assert stats["by_status"] == {"200": 12}  # not one 429 from the provider's TPM cap
    # The provider counted more than a minute's worth: the limit was really exercised.
    assert stats["prompt_tokens"] + stats["completion_tokens"] > TPM
