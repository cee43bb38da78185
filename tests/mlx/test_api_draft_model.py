"""`draft_model` through the real openai SDK: answers equal those of the plain model.

The tiny llama is served three times: plain, with itself as its draft model (every
draft accepted) and with another seed's model as the draft (mostly rejected).
Greedy and seeded answers must be the same text, stream or not, with n>1 and stop
strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("mlx.core")

from tests.mlx.test_api_speculative import MESSAGES, answer
from tests.support.apps import mlx_app
from tests.support.mlx_models import build_tiny_llama


@pytest.fixture(scope="module")
def app(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    other = build_tiny_llama(tmp_path_factory.mktemp("other-draft"), seed=7)

    def served(draft: Path | None) -> dict[str, Any]:
        options = {"draft_model": str(draft), "num_draft_tokens": 3} if draft else {}
        return {"backend": "mlx", "path": str(tiny_llama_path), "options": options}

    return mlx_app({"tiny": served(None), "tiny-self": served(tiny_llama_path), "tiny-other": served(other)})


@pytest.mark.parametrize("stream", [False, True])
def test_draft_model_answers_equal_plain_ones(client: openai.OpenAI, stream: bool) -> None:
    for messages in MESSAGES:
        for extra in (
            {"max_tokens": 40, "temperature": 0},
            {"max_tokens": 30, "n": 2, "temperature": 0},
            {"max_tokens": 30, "temperature": 0.9, "seed": 5},
        ):
            plain = answer(client, "tiny", messages, stream=stream, **extra)
            assert all(plain)
            for model in ("tiny-self", "tiny-other"):
                assert answer(client, model, messages, stream=stream, **extra) == plain, (model, extra)
        full = answer(client, "tiny", messages, stream=stream, max_tokens=40, temperature=0)[0]
        stop = {"max_tokens": 40, "temperature": 0, "stop": [full[12:16]]}
        stopped = answer(client, "tiny", messages, stream=stream, **stop)
        assert len(stopped[0]) < len(full)
        for model in ("tiny-self", "tiny-other"):
            assert answer(client, model, messages, stream=stream, **stop) == stopped


def test_acceptance_of_each_draft_model_shows_in_models(client: openai.OpenAI, server: str) -> None:
    def counts() -> dict[str, tuple[int, int]]:
        cards = httpx.get(f"{server}/v1/models").json()["data"]
        return {
            card["id"]: (
                card["backend_stats"]["spec_draft_tokens"],
                card["backend_stats"]["spec_accepted_tokens"],
            )
            for card in cards
            if card["id"] in ("tiny-self", "tiny-other")
        }

    before = counts()
    for model in ("tiny-self", "tiny-other"):
        answer(client, model, MESSAGES[1], stream=False, max_tokens=40, temperature=0)
    after = counts()
    (self_drafted, self_accepted), (other_drafted, other_accepted) = (
        (after[name][0] - before[name][0], after[name][1] - before[name][1])
        for name in ("tiny-self", "tiny-other")
    )
    assert self_drafted >= 20 and self_accepted == self_drafted  # greedy: its own argmax, every time
    assert other_drafted > 0 and other_accepted < other_drafted / 2
