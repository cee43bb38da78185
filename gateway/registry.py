"""Model id -> backend instance: lazy loading, memory budget, leases, hot reconfigure.

Backend kinds come from the `register_backends` hook; models and aliases from
config. Only configured models can ever be loaded. Concurrent first requests
share one load (single flight); a failed load is reported to its waiters and
retried by the next request. Before a load, least-recently-used idle unpinned
models are unloaded until the new one fits the memory budget. A request holds a
`Lease` while it generates, so nothing it uses is unloaded under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from gateway.admission import Admission, Slot
from gateway.backend import Backend, ModelSpec
from gateway.config import ConfigError, GatewayConfig, ModelConfig
from gateway.errors import BackendUnavailable, GatewayError, ModelNotFound
from gateway.memory import release_free_memory

log = structlog.get_logger("gateway.registry")

BackendFactory = Callable[[ModelSpec], Backend]
ModelStatus = Literal["unloaded", "loading", "downloading", "loaded", "failed"]  # downloading: shown only


@dataclass(eq=False)
class ModelEntry:
    spec: ModelSpec
    admission: Admission
    backend: Backend | None = None
    status: ModelStatus = "unloaded"
    load_task: asyncio.Task[Backend] | None = None
    memory_bytes: int = 0
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    retired: bool = False  # removed from config: drains, then unloads
    loading: Backend | None = field(default=None, repr=False)  # the backend while it loads

    @property
    def download_percent(self) -> float | None:
        """How much of the model's files a load has fetched so far (a backend with a
        `download_progress()` reports it), else None."""
        report = getattr(self.loading, "download_progress", None)
        share = report() if report is not None and self.status == "loading" else None
        return None if share is None else round(share * 100, 1)

    @property
    def shown_status(self) -> ModelStatus:
        """`status`, with `downloading` for a load still fetching the model's files."""
        return "downloading" if self.download_percent is not None else self.status

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def config(self) -> ModelConfig:
        return self.spec.config


class Lease:
    """A request's hold on a loaded model: an admission slot and an activity count."""

    def __init__(self, registry: BackendRegistry, entry: ModelEntry, slot: Slot, backend: Backend) -> None:
        self.registry, self.entry, self.slot, self.backend = registry, entry, slot, backend
        self._held = True
        entry.active += 1

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self.slot.release()
        self.entry.active -= 1
        self.entry.last_used = time.monotonic()
        if self.entry.retired and self.entry.active == 0:
            asyncio.ensure_future(self.registry.unload(self.entry))


def served_name(entry: ModelEntry) -> str:
    """`id (aliases: a, b)`, as error messages list a model."""
    aliases = entry.config.aliases
    return f"{entry.id} (aliases: {', '.join(aliases)})" if aliases else entry.id


def _admission(config: ModelConfig) -> Admission:
    return Admission(config.max_concurrency, config.max_queue, config.queue_timeout_s)


def _ignore(model_id: str, seconds: float) -> None:
    return None


class BackendRegistry:
    def __init__(self, config: GatewayConfig, factories: dict[str, BackendFactory]) -> None:
        # Observers of queue waits and load times (the app's metrics set them).
        self.on_queue_wait: Callable[[str, float], None] = _ignore
        self.on_loaded: Callable[[str, float], None] = _ignore
        self.factories = factories
        self.entries: dict[str, ModelEntry] = {}
        self.names: dict[str, str] = {}
        self.retired: set[ModelEntry] = set()
        self.reconfigure(config)

    # --- lookup ------------------------------------------------------------------------

    def resolve(self, name: str, visible: Callable[[ModelEntry], bool] | None = None) -> ModelEntry:
        """The entry for a model id or alias; 404 `model_not_found` otherwise, naming the
        models served (those `visible` lets the caller see: its key's models)."""
        model_id = self.names.get(name)
        if model_id is None:
            shown = [entry for entry in self.entries.values() if visible is None or visible(entry)]
            raise ModelNotFound(name, [served_name(entry) for entry in shown])
        return self.entries[model_id]

    def factory(self, entry: ModelEntry) -> BackendFactory:
        return self.factories[entry.config.backend]

    @property
    def memory_in_use(self) -> int:
        return sum(
            entry.memory_bytes for entry in self._all_entries() if entry.status in ("loaded", "loading")
        )

    # --- leases and loading ----------------------------------------------------------

    async def acquire(self, entry: ModelEntry) -> Lease:
        """Wait for an admission slot, load the model if needed, and hold it."""
        asked = time.perf_counter()
        slot = await entry.admission.acquire()
        self.on_queue_wait(entry.id, time.perf_counter() - asked)
        try:
            backend = await self.backend(entry)
        except BaseException:
            slot.release()
            raise
        return Lease(self, entry, slot, backend)

    async def backend(self, entry: ModelEntry) -> Backend:
        """The loaded backend of a model, loading it on first use (single flight)."""
        entry.last_used = time.monotonic()
        if entry.backend is not None:
            return entry.backend
        if entry.load_task is None:
            entry.load_task = asyncio.ensure_future(self._load(entry))
        return await asyncio.shield(entry.load_task)

    async def _load(self, entry: ModelEntry) -> Backend:
        log.info("model loading", model=entry.id, backend=entry.config.backend)
        try:
            backend = self.factory(entry)(entry.spec)
            needed = entry.config.memory_bytes
            if needed is None:
                estimate = getattr(backend, "memory_estimate", None)
                needed = estimate() if estimate is not None else 0
            await self._make_room(entry, needed)
            entry.memory_bytes, entry.status, entry.loading = needed, "loading", backend
            loading = time.perf_counter()
            await backend.load()
            self.on_loaded(entry.id, time.perf_counter() - loading)
        except Exception as error:
            entry.status, entry.load_task, entry.loading = "failed", None, None
            log.error("model load failed", model=entry.id, error=str(error))
            if isinstance(error, GatewayError):
                raise
            raise BackendUnavailable(f"model '{entry.id}' failed to load: {error}") from error
        entry.backend, entry.status, entry.loading = backend, "loaded", None
        log.info("model loaded", model=entry.id, memory_bytes=entry.memory_bytes)
        return backend

    async def _make_room(self, entry: ModelEntry, needed: int) -> None:
        budget = self.memory_budget
        if budget is None:
            return
        if needed > budget:
            raise BackendUnavailable(
                f"model '{entry.id}' needs about {needed} bytes, more than the memory budget of {budget}",
                code="model_too_large",
            )
        while self.memory_in_use + needed > budget:
            candidates = [
                other
                for other in self._all_entries()
                if other is not entry
                and other.status == "loaded"
                and other.active == 0
                and not other.config.pin
            ]
            if not candidates:
                busy = ", ".join(e.id for e in self._all_entries() if e.status in ("loaded", "loading"))
                raise BackendUnavailable(
                    f"model '{entry.id}' ({needed} bytes) does not fit the memory budget of {budget} bytes; "
                    f"loaded and busy or pinned: {busy}",
                    code="memory_budget_exceeded",
                    headers={"Retry-After": "5"},
                )
            victim = min(candidates, key=lambda other: other.last_used)
            log.info("model evicted", model=victim.id, for_model=entry.id, memory_bytes=victim.memory_bytes)
            await self.unload(victim)

    async def preload(self) -> None:
        for entry in list(self.entries.values()):
            if entry.config.preload:
                await self.backend(entry)

    async def unload(self, entry: ModelEntry) -> None:
        """Drop the backend and give its memory back."""
        backend, entry.backend, entry.load_task = entry.backend, None, None
        entry.status, entry.memory_bytes = "unloaded", 0
        if backend is not None:
            await backend.unload()
            del backend
            release_free_memory()
            log.info("model unloaded", model=entry.id)

    async def unload_idle(self, default_ttl_s: float, now: float | None = None) -> list[str]:
        """Unload unpinned models idle longer than their TTL; the ids unloaded."""
        now = time.monotonic() if now is None else now
        unloaded = []
        for entry in list(self._all_entries()):
            ttl = entry.config.ttl_s if entry.config.ttl_s is not None else default_ttl_s
            idle = entry.status == "loaded" and entry.active == 0 and not entry.config.pin
            if idle and ttl > 0 and now - entry.last_used >= ttl:
                await self.unload(entry)
                unloaded.append(entry.id)
        return unloaded

    async def close(self) -> None:
        for entry in list(self._all_entries()):
            if entry.load_task is not None and not entry.load_task.done():
                entry.load_task.cancel()
            await self.unload(entry)

    # --- configuration -----------------------------------------------------------------

    def reconfigure(self, config: GatewayConfig, factories: dict[str, BackendFactory] | None = None) -> None:
        """Apply a new config: add models, retire removed or changed ones, keep the rest.

        A retired model finishes its in-flight requests, then unloads. Changed
        defaults and limits apply to new requests; `factories` (from the new
        plugins) build the models added from now on.
        """
        factories = self.factories if factories is None else factories
        for model_id, model_config in config.models.items():
            if model_config.backend not in factories:
                known = ", ".join(sorted(factories)) or "none"
                raise ConfigError(
                    f'models."{model_id}".backend: unknown backend "{model_config.backend}" (registered: {known})'
                )
            # Built and dropped: a backend checks its options when built (cheaply; loading is
            # separate), so a mistake fails the start-up or the reload, not a request later.
            factory = factories[model_config.backend]
            factory(ModelSpec(model_id, model_config))
            _set_ceiling(model_config, factory, config.server.max_tokens)
        self.factories = factories
        self.memory_budget = config.memory_budget_bytes()
        entries: dict[str, ModelEntry] = {}
        for model_id, model_config in config.models.items():
            old = self.entries.get(model_id)
            if old is not None and _same_engine(old.config, model_config):
                if (old.config.max_concurrency, old.config.max_queue) != (
                    model_config.max_concurrency,
                    model_config.max_queue,
                ):
                    old.admission = _admission(model_config)
                else:  # same limits: the queue (and its waiters) stays, with the new timeout
                    old.admission.queue_timeout_s = model_config.queue_timeout_s
                old.spec = ModelSpec(model_id, model_config)
                entries[model_id] = old
            else:
                entries[model_id] = ModelEntry(ModelSpec(model_id, model_config), _admission(model_config))
        for model_id, old in self.entries.items():
            if entries.get(model_id) is not old:
                self._retire(old)
        self.entries = entries
        self.names = {
            name: model_id for model_id, c in config.models.items() for name in (model_id, *c.aliases)
        }

    def _retire(self, entry: ModelEntry) -> None:
        entry.retired = True
        self.retired.add(entry)
        if entry.active == 0 and _loop_running():
            asyncio.ensure_future(self.unload(entry))

    def _all_entries(self) -> list[ModelEntry]:
        """Configured entries and retired ones still holding memory or requests."""
        self.retired = {entry for entry in self.retired if entry.status != "unloaded" or entry.active}
        return [*self.entries.values(), *self.retired]


def _set_ceiling(model: ModelConfig, factory: BackendFactory, server_max_tokens: int) -> None:
    """Every model gets a `max_tokens` ceiling, so no request can generate without end:
    its own, else its backend's (one with `bounds_max_tokens`, like MLX's context
    length), else the server's."""
    if model.max_tokens is None and not getattr(factory, "bounds_max_tokens", False):
        model.max_tokens = server_max_tokens
        model.default_max_tokens = min(model.default_max_tokens, server_max_tokens)


def _same_engine(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether a loaded backend can keep serving under the new config."""
    return (old.backend, old.path, old.options) == (new.backend, new.path, new.options)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
