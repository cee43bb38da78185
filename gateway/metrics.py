"""Prometheus metrics (`GET /metrics`), named as vLLM names them with a `gateway:` prefix.

Per request, from what the hooks already carry: `on_response`/`on_error` read
`RequestContext.timings` and the answer's usage (a few histogram observations
per request, none per token). Per model state (running and queued requests,
status, memory) is read from the registry when scraped, costing requests nothing.
The registry reports queue waits and load times through two callbacks.

Labels are model ids from the config, finish reasons, error codes, plugin names
and route templates: never request content, never keys.

Per-token inter-token latency needs the stream code: call `observe_token_gap`
per chunk (see its docstring). Until then, `inter_token_latency_seconds` gets one
observation per request, its mean gap between tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import GatewayError, PluginFailed
from gateway.hookspecs import hookimpl

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.registry import BackendRegistry
    from gateway.responses import ChatCompletion

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PLUGIN_NAME = "gateway_metrics"
_MODEL = ("model_name",)
_LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
)
_TOKEN_GAP_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
_STATUSES = ("unloaded", "loading", "loaded", "failed")


class Metrics:
    """One app's metrics, in a registry of its own (no global state)."""

    def __init__(self, models: BackendRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = _MODEL
        ) -> Any:
            return Histogram(f"gateway:{name}", doc, labels, registry=r, buckets=buckets)

        def counter(name: str, doc: str, labels: tuple[str, ...] = _MODEL) -> Any:
            return Counter(f"gateway:{name}", doc, labels, registry=r)

        self.ttft = histogram("time_to_first_token_seconds", "Time to the first token.", _LATENCY_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between tokens.", _TOKEN_GAP_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Whole-request latency.", _LATENCY_BUCKETS)
        self.queue = histogram("request_queue_time_seconds", "Time waiting for a slot.", _LATENCY_BUCKETS)
        self.prompt = histogram("request_prompt_tokens", "Prompt tokens per request.", _TOKEN_BUCKETS)
        self.generation = histogram(
            "request_generation_tokens", "Generated tokens per request.", _TOKEN_BUCKETS
        )
        self.load = histogram("model_load_seconds", "Time to load a model.", _LATENCY_BUCKETS)
        self.prompt_total = counter("prompt_tokens", "Prompt tokens processed.")
        self.generation_total = counter("generation_tokens", "Tokens generated.")
        self.success = counter(
            "request_success", "Finished choices, by finish reason.", ("model_name", "finished_reason")
        )
        self.cache_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.cache_hits = counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.errors = counter("request_errors", "Failed requests, by error code.", ("model_name", "code"))
        self.plugin_errors = counter("plugin_errors", "Plugin failures.", ("plugin", "hook"))
        self.http = counter(
            "http_requests", "HTTP requests by route template and status.", ("route", "status")
        )
        r.register(_ModelState(models))
        self._per_model: dict[str, tuple[Any, ...]] = {}

    # --- entry points -------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def http_request(self, route: str, status: int) -> None:
        self.http.labels(route, str(status)).inc()

    def queue_wait(self, model_id: str, seconds: float) -> None:
        self.queue.labels(model_id).observe(seconds)

    def model_loaded(self, model_id: str, seconds: float) -> None:
        self.load.labels(model_id).observe(seconds)

    def observe_token_gap(self, model_id: str) -> Callable[[float], None]:
        """The cheap per-token entry point: call the returned function with each gap (seconds)
        between two chunks of one choice. For the stream code: get it once per request
        (`ChatService.generate`, next to `context.timings.first_token`), then call it per
        chunk after the first with `now - previous`; one histogram observe per token."""
        return self.itl.labels(model_id).observe

    def _model(self, model_id: str) -> tuple[Any, ...]:
        """Each model's labelled children, made once (`labels()` costs a lock and a lookup)."""
        children = self._per_model.get(model_id)
        if children is None:
            children = tuple(
                metric.labels(model_id)
                for metric in (
                    self.ttft,
                    self.itl,
                    self.e2e,
                    self.prompt,
                    self.generation,
                    self.prompt_total,
                    self.generation_total,
                    self.cache_queries,
                    self.cache_hits,
                )
            )
            self._per_model[model_id] = children
        return children

    # --- hooks --------------------------------------------------------------------------

    def response(self, response: ChatCompletion, context: RequestContext) -> None:
        ttft, itl, e2e, prompt, generation, prompt_total, generation_total, queries, hits = self._model(
            context.model
        )
        timings, usage = context.timings, response.usage
        if timings.first_token is not None:
            ttft.observe(timings.first_token - timings.started)
        if timings.finished is not None:
            e2e.observe(timings.finished - timings.started)
            if timings.first_token is not None and usage.completion_tokens > len(response.choices):
                gaps = usage.completion_tokens - len(response.choices)
                itl.observe((timings.finished - timings.first_token) / gaps)
        prompt.observe(usage.prompt_tokens)
        generation.observe(usage.completion_tokens)
        prompt_total.inc(usage.prompt_tokens)
        generation_total.inc(usage.completion_tokens)
        queries.inc(usage.prompt_tokens)
        hits.inc(usage.prompt_tokens_details.cached_tokens)
        for choice in response.choices:
            self.success.labels(context.model, choice.finish_reason or "unknown").inc()

    def error(self, error: Exception, context: RequestContext) -> None:
        code = (error.code or "error") if isinstance(error, GatewayError) else "internal_error"
        # The model label only once the name resolved (`backend` set): else it is client input.
        self.errors.labels(context.model if context.backend else "", code).inc()
        if isinstance(error, PluginFailed):
            self.plugin_errors.labels(error.plugin, error.hook).inc()


class MetricsPlugin:
    """The hooks that feed `Metrics`; registered in every plugin manager the app builds."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @hookimpl
    def on_response(self, response: ChatCompletion, context: RequestContext) -> None:
        self.metrics.response(response, context)

    @hookimpl
    def on_error(self, error: Exception, context: RequestContext) -> None:
        self.metrics.error(error, context)


def attach(manager: Any, metrics: Metrics | None) -> None:
    """Register the metrics hooks in `manager` (replacing an earlier app's)."""
    if manager.has_plugin(PLUGIN_NAME):
        manager.unregister(name=PLUGIN_NAME)
    if metrics is not None:
        manager.register(MetricsPlugin(metrics), name=PLUGIN_NAME)


class _ModelState(Collector):
    """Gauges read from the registry at scrape time."""

    def __init__(self, models: BackendRegistry) -> None:
        self.models = models

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        registry = self.models
        running = GaugeMetricFamily("gateway:num_requests_running", "Requests generating.", labels=_MODEL)
        waiting = GaugeMetricFamily("gateway:num_requests_waiting", "Requests queued.", labels=_MODEL)
        status = GaugeMetricFamily(
            "gateway:model_status", "1 for the model's current status.", labels=("model_name", "status")
        )
        memory = GaugeMetricFamily("gateway:model_memory_bytes", "Memory held by the model.", labels=_MODEL)
        cache = GaugeMetricFamily(
            "gateway:prefix_cache_bytes", "Bytes held by the model's prefix cache.", labels=_MODEL
        )
        for entry in registry.entries.values():
            stats = getattr(entry.backend, "stats", None)
            if stats is not None:
                held = stats().get("prefix_cache_bytes")
                if held is not None:
                    cache.add_metric([entry.id], held)
            running.add_metric([entry.id], entry.admission.running)
            waiting.add_metric([entry.id], entry.admission.queued)
            memory.add_metric([entry.id], entry.memory_bytes)
            for name in _STATUSES:
                status.add_metric([entry.id, name], 1.0 if entry.status == name else 0.0)
        yield from (running, waiting, status, memory, cache)
        budget = GaugeMetricFamily("gateway:memory_budget_bytes", "The memory budget (-1: none).")
        budget.add_metric([], -1 if registry.memory_budget is None else registry.memory_budget)
        yield budget
        in_use = GaugeMetricFamily("gateway:memory_in_use_bytes", "Memory held by loaded models.")
        in_use.add_metric([], registry.memory_in_use)
        yield in_use
