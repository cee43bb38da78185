"""Prometheus metrics (`GET /metrics`), named as vLLM names them with a `gateway:` prefix.

Per request, from what the pipeline already has: `on_response`/`on_error` (which
the pipeline calls beside those hooks, not as a plugin, so a gateway without
plugins dispatches no hook) read `RequestContext.timings` and the answer's usage;
none per token. Per model state (running and queued requests, status, memory,
prefix-cache bytes) is read from the registry when scraped, costing requests
nothing. The registry reports queue
waits and load times through two callbacks.

Cheap on the hot path: an observation is a `bisect` and two additions on plain
lists, on the event loop's thread, with no lock (prometheus-client's own
`Histogram` takes a lock and a `labels()` lookup per call, about 10 us per
request in all, 17% of the echo gateway's requests/s). At scrape time the
figures become prometheus-client metric families, and prometheus-client writes
the exposition.

Labels are model ids from the config, finish reasons, error codes, plugin names
and route templates: never request content, never keys.

Inter-token latency is observed per chunk by the pipeline (`observe_token_gap`):
one call of a plain function per chunk, nothing allocated.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.errors import GatewayError, PluginFailed

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.registry import BackendRegistry
    from gateway.responses import ChatCompletion

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0),
)
TOKEN_GAP_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075),
    *(0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5),
)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
_STATUSES = ("unloaded", "loading", "loaded", "failed")


class Distribution:
    """One histogram's counts per bucket (the last is +Inf) and its sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus buckets are `le`: bisect_left
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, running = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return cumulative


class ModelFigures:
    """Everything counted for one model."""

    __slots__ = (
        "cache_hits", "cache_queries", "e2e", "finished", "generation", "generation_total",
        "itl", "load", "prompt", "prompt_total", "queue", "ttft",
    )  # fmt: skip

    def __init__(self) -> None:
        self.ttft = Distribution(LATENCY_BUCKETS)
        self.itl = Distribution(TOKEN_GAP_BUCKETS)
        self.e2e = Distribution(LATENCY_BUCKETS)
        self.queue = Distribution(LATENCY_BUCKETS)
        self.load = Distribution(LATENCY_BUCKETS)
        self.prompt = Distribution(TOKEN_BUCKETS)
        self.generation = Distribution(TOKEN_BUCKETS)
        self.prompt_total = self.generation_total = self.cache_queries = self.cache_hits = 0
        self.finished: dict[str, int] = {}  # finish reason -> choices


class Metrics:
    """One app's metrics, in a registry of its own (no global state)."""

    def __init__(self, models: BackendRegistry) -> None:
        self.models: dict[str, ModelFigures] = {}
        self.http: dict[tuple[str, int], int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.plugin_errors: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Figures(self))
        self.registry.register(_ModelState(models))

    def model(self, model_id: str) -> ModelFigures:
        figures = self.models.get(model_id)
        if figures is None:
            figures = self.models[model_id] = ModelFigures()
        return figures

    # --- entry points -------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def http_request(self, route: str, status: int) -> None:
        key = (route, status)
        self.http[key] = self.http.get(key, 0) + 1

    def queue_wait(self, model_id: str, seconds: float) -> None:
        self.model(model_id).queue.observe(seconds)

    def model_loaded(self, model_id: str, seconds: float) -> None:
        self.model(model_id).load.observe(seconds)

    def observe_token_gap(self, model_id: str) -> Callable[[float], None]:
        """The per-token entry point: the pipeline gets it once per request and calls it
        with each gap (seconds) between two chunks of one choice. About 0.3 us a call."""
        return self.model(model_id).itl.observe

    # --- per request: the pipeline calls these where it calls on_response / on_error ------

    def on_response(self, response: ChatCompletion, context: RequestContext) -> None:
        figures = self.model(context.model)
        timings, usage = context.timings, response.usage
        first, finished = timings.first_token, timings.finished
        if first is not None:
            figures.ttft.observe(first - timings.started)
        if finished is not None:
            figures.e2e.observe(finished - timings.started)
        figures.prompt.observe(usage.prompt_tokens)
        figures.generation.observe(usage.completion_tokens)
        figures.prompt_total += usage.prompt_tokens
        figures.generation_total += usage.completion_tokens
        figures.cache_queries += usage.prompt_tokens
        figures.cache_hits += usage.prompt_tokens_details.cached_tokens
        finished_reasons = figures.finished
        for choice in response.choices:
            reason = choice.finish_reason or "unknown"
            finished_reasons[reason] = finished_reasons.get(reason, 0) + 1

    def on_error(self, error: Exception, context: RequestContext) -> None:
        code = (error.code or "error") if isinstance(error, GatewayError) else "internal_error"
        # The model label only once the name resolved (`backend` set): else it is client input.
        key = (context.model if context.backend else "", code)
        self.errors[key] = self.errors.get(key, 0) + 1
        if isinstance(error, PluginFailed):
            plugin = (error.plugin, error.hook)
            self.plugin_errors[plugin] = self.plugin_errors.get(plugin, 0) + 1


class _Figures(Collector):
    """The counted figures as metric families, built at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        models = list(self.metrics.models.items())
        histograms = {
            "time_to_first_token_seconds": ("Time to the first token.", "ttft"),
            "inter_token_latency_seconds": ("Time between tokens.", "itl"),
            "e2e_request_latency_seconds": ("Whole-request latency.", "e2e"),
            "request_queue_time_seconds": ("Time waiting for a slot.", "queue"),
            "request_prompt_tokens": ("Prompt tokens per request.", "prompt"),
            "request_generation_tokens": ("Generated tokens per request.", "generation"),
            "model_load_seconds": ("Time to load a model.", "load"),
        }
        for name, (doc, attribute) in histograms.items():
            family = HistogramMetricFamily(f"gateway:{name}", doc, labels=["model_name"])
            for model_id, figures in models:
                distribution: Distribution = getattr(figures, attribute)
                family.add_metric([model_id], distribution.buckets(), distribution.total)
            yield family
        counters = {
            "prompt_tokens": ("Prompt tokens processed.", "prompt_total"),
            "generation_tokens": ("Tokens generated.", "generation_total"),
            "prefix_cache_queries": ("Prompt tokens looked up in the prefix cache.", "cache_queries"),
            "prefix_cache_hits": ("Prompt tokens found in the prefix cache.", "cache_hits"),
        }
        for name, (doc, attribute) in counters.items():
            family = CounterMetricFamily(f"gateway:{name}", doc, labels=["model_name"])
            for model_id, figures in models:
                family.add_metric([model_id], getattr(figures, attribute))
            yield family
        success = CounterMetricFamily(
            "gateway:request_success",
            "Finished choices, by finish reason.",
            labels=["model_name", "finished_reason"],
        )
        for model_id, figures in models:
            for reason, count in figures.finished.items():
                success.add_metric([model_id, reason], count)
        yield success
        yield _counter(
            "request_errors", "Failed requests, by error code.", ["model_name", "code"], self.metrics.errors
        )
        yield _counter("plugin_errors", "Plugin failures.", ["plugin", "hook"], self.metrics.plugin_errors)
        http = {(route, str(status)): count for (route, status), count in self.metrics.http.items()}
        yield _counter(
            "http_requests", "HTTP requests by route template and status.", ["route", "status"], http
        )


def _counter(name: str, doc: str, labels: list[str], counts: dict[tuple[str, str], int]) -> Metric:
    family = CounterMetricFamily(f"gateway:{name}", doc, labels=labels)
    for key, count in list(counts.items()):
        family.add_metric(list(key), count)
    return family


class _ModelState(Collector):
    """Gauges read from the registry at scrape time."""

    def __init__(self, models: BackendRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        registry = self.models
        labels = ["model_name"]
        running = GaugeMetricFamily("gateway:num_requests_running", "Requests generating.", labels=labels)
        waiting = GaugeMetricFamily("gateway:num_requests_waiting", "Requests queued.", labels=labels)
        status = GaugeMetricFamily(
            "gateway:model_status", "1 for the model's current status.", labels=["model_name", "status"]
        )
        memory = GaugeMetricFamily("gateway:model_memory_bytes", "Memory held by the model.", labels=labels)
        cache = GaugeMetricFamily(
            "gateway:prefix_cache_bytes", "Bytes held by the model's prefix cache.", labels=labels
        )
        drafted = CounterMetricFamily(
            "gateway:spec_decode_num_draft_tokens", "Draft tokens proposed for verification.", labels=labels
        )
        accepted = CounterMetricFamily(
            "gateway:spec_decode_num_accepted_tokens", "Draft tokens the model accepted.", labels=labels
        )
        for entry in registry.entries.values():
            running.add_metric([entry.id], entry.admission.running)
            waiting.add_metric([entry.id], entry.admission.queued)
            memory.add_metric([entry.id], entry.memory_bytes)
            for name in _STATUSES:
                status.add_metric([entry.id, name], 1.0 if entry.status == name else 0.0)
            stats = getattr(entry.backend, "stats", None)
            figures = stats() if stats is not None else {}
            held = figures.get("prefix_cache_bytes")
            if held is not None:
                cache.add_metric([entry.id], held)
            if "spec_draft_tokens" in figures:  # speculative decoding, in vLLM's names
                drafted.add_metric([entry.id], figures["spec_draft_tokens"])
                accepted.add_metric([entry.id], figures["spec_accepted_tokens"])
        yield from (running, waiting, status, memory, cache, drafted, accepted)
        budget = GaugeMetricFamily("gateway:memory_budget_bytes", "The memory budget (-1: none).")
        budget.add_metric([], -1 if registry.memory_budget is None else registry.memory_budget)
        yield budget
        in_use = GaugeMetricFamily("gateway:memory_in_use_bytes", "Memory held by loaded models.")
        in_use.add_metric([], registry.memory_in_use)
        yield in_use
