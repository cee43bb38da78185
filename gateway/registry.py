"""Model id -> backend instance, created and loaded lazily on first use.

Backend kinds come from the `register_backends` hook; models and their aliases
from config. Only configured models can ever be loaded. Concurrent first
requests for a model share one load (single flight); a failed load is reported
to the waiting requests and retried by the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from gateway.backend import Backend, ModelSpec
from gateway.config import ConfigError, GatewayConfig, ModelConfig
from gateway.errors import BackendUnavailable, GatewayError, ModelNotFound

log = structlog.get_logger("gateway.registry")

BackendFactory = Callable[[ModelSpec], Backend]
ModelStatus = Literal["unloaded", "loading", "loaded", "failed"]


@dataclass
class ModelEntry:
    spec: ModelSpec
    backend: Backend | None = None
    status: ModelStatus = "unloaded"
    load_task: asyncio.Task[Backend] | None = None
    error: str | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def config(self) -> ModelConfig:
        return self.spec.config


class BackendRegistry:
    def __init__(self, config: GatewayConfig, factories: dict[str, BackendFactory]) -> None:
        self.factories = factories
        self.entries: dict[str, ModelEntry] = {}
        self.names: dict[str, str] = {}
        for model_id, model_config in config.models.items():
            if model_config.backend not in factories:
                known = ", ".join(sorted(factories)) or "none"
                raise ConfigError(
                    f'models."{model_id}".backend: unknown backend "{model_config.backend}" '
                    f"(registered: {known})"
                )
            self.entries[model_id] = ModelEntry(ModelSpec(model_id, model_config))
            for name in (model_id, *model_config.aliases):
                self.names[name] = model_id

    def resolve(self, name: str) -> ModelEntry:
        """The entry for a model id or alias; 404 `model_not_found` otherwise."""
        model_id = self.names.get(name)
        if model_id is None:
            raise ModelNotFound(name)
        return self.entries[model_id]

    async def backend(self, entry: ModelEntry) -> Backend:
        """The loaded backend of a model, loading it on first use."""
        if entry.backend is not None:
            return entry.backend
        if entry.load_task is None:
            entry.load_task = asyncio.ensure_future(self._load(entry))
        return await asyncio.shield(entry.load_task)

    async def _load(self, entry: ModelEntry) -> Backend:
        entry.status = "loading"
        log.info("model loading", model=entry.id, backend=entry.config.backend)
        try:
            backend = self.factories[entry.config.backend](entry.spec)
            await backend.load()
        except Exception as error:
            entry.status, entry.error, entry.load_task = "failed", str(error), None
            log.error("model load failed", model=entry.id, error=str(error))
            if isinstance(error, GatewayError):
                raise
            raise BackendUnavailable(f"model '{entry.id}' failed to load: {error}") from error
        entry.backend, entry.status, entry.error = backend, "loaded", None
        log.info("model loaded", model=entry.id)
        return backend

    async def preload(self) -> None:
        for entry in self.entries.values():
            if entry.config.preload:
                await self.backend(entry)

    async def unload(self, entry: ModelEntry) -> None:
        backend, entry.backend, entry.load_task = entry.backend, None, None
        entry.status = "unloaded"
        if backend is not None:
            await backend.unload()

    async def close(self) -> None:
        for entry in self.entries.values():
            if entry.load_task is not None and not entry.load_task.done():
                entry.load_task.cancel()
            await self.unload(entry)
