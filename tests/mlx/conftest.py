"""Session fixtures for the MLX backend tests: offline models built once per run.

Nothing may reach a model hub: HF_HUB_OFFLINE is forced before anything imports
huggingface_hub. Models are built lazily into pytest's session temp directory.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlx_models import SCENARIOS, Script, build_scripted_model, build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer llama with the ChatML test tokenizer (vocab 512)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_path: Path) -> Any:
    """The tiny llama's tokenizer as mlx-lm loads it (a TokenizerWrapper)."""
    from mlx_lm.tokenizer_utils import load

    return load(tiny_llama_path)


@pytest.fixture(scope="session")
def scripted_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str | Script], Path]:
    """`scripted_model("tool_call")` -> checkpoint path for a scenario of `SCENARIOS`.

    A `Script` may be passed instead of a name for a one-off script. Each model is
    built on first use and shared for the rest of the session.
    """
    built: dict[str | Script, Path] = {}

    def get(scenario: str | Script) -> Path:
        if scenario not in built:
            script = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
            name = scenario if isinstance(scenario, str) else "custom"
            built[scenario] = build_scripted_model(tmp_path_factory.mktemp(f"scripted-{name}"), script)
        return built[scenario]

    return get


@pytest.fixture(scope="module")
def server(app: Any) -> Iterator[str]:
    """A real server for the requesting module's `app` fixture, on a free loopback port."""
    from tests.support.server import running_server

    with running_server(app) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    """The official openai client against `server`."""
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
