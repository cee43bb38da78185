"""`ollama:NAME[:TAG]`: a model pulled by Ollama, found in its store.

The store ($OLLAMA_MODELS, default ~/.ollama/models) keeps a manifest per
name and tag under manifests/registry.ollama.ai/<namespace>/<name>/<tag>; its
`application/vnd.ollama.image.model` layer names the GGUF blob by digest,
stored as blobs/sha256-<hex>.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from backends.mlx.gguf import is_gguf
from backends.mlx.model_source import ModelSourceError

MODEL_LAYER = "application/vnd.ollama.image.model"
REGISTRY = "registry.ollama.ai"


def ollama_store() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def ollama_blob(reference: str, store: Path | None = None) -> Path:
    """The GGUF blob for `NAME[:TAG]` (TAG defaults to `latest`; NAME may be `user/name`)."""
    root = store if store is not None else ollama_store()
    name, _, tag = reference.partition(":")
    if not name:
        raise ModelSourceError("an ollama: path needs a model name, e.g. ollama:smollm2:135m")
    namespace = name if "/" in name else f"library/{name}"
    manifest_path = root / "manifests" / REGISTRY / namespace / (tag or "latest")
    label = f"{name}:{tag or 'latest'}"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ModelSourceError(
            f"Ollama model '{label}' is not in the store at {root} (no manifest at {manifest_path}); "
            f"pull it with `ollama pull {label}` or set OLLAMA_MODELS"
        ) from None
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"Ollama manifest {manifest_path} cannot be read: {error}") from None
    digests = [
        layer.get("digest", "")
        for layer in manifest.get("layers", [])
        if layer.get("mediaType") == MODEL_LAYER
    ]
    if not digests:
        raise ModelSourceError(f"Ollama model '{label}' has no model layer ({MODEL_LAYER}) in its manifest")
    blob = root / "blobs" / digests[0].replace(":", "-", 1)
    if not blob.is_file():
        raise ModelSourceError(f"Ollama model '{label}': its model blob {blob} is missing")
    if not is_gguf(blob):
        raise ModelSourceError(f"Ollama model '{label}': its model blob {blob} is not a GGUF file")
    return blob
