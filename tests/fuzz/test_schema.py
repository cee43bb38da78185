"""Schemathesis against the served OpenAPI schema, every route: no 5xx, and every 4xx
carries the OpenAI error object.

In `make test` a small sample runs (`FUZZ_EXAMPLES`, default 6 per operation and mode);
`make fuzz` runs at least 10,000 cases against echo and a tiny MLX model.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from gateway import create_app, parse_config
from gateway.plugins import new_plugin_manager
from tests.support.server import running_server

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
WITH_MLX = os.environ.get("FUZZ_MLX", "") not in ("", "0")


def _app(tmp_path: Path) -> Any:
    from backends import echo

    manager = new_plugin_manager()
    manager.register(echo, name="echo")
    models: dict[str, Any] = {
        "echo": {"backend": "echo", "aliases": ["gpt-4o"], "max_tokens": 64},
    }
    if WITH_MLX:
        from backends.mlx import plugin as mlx_plugin
        from tests.support.mlx_models import build_tiny_llama

        manager.register(mlx_plugin, name="mlx")
        path = build_tiny_llama(tmp_path / "tiny")
        models["tiny"] = {
            "backend": "mlx",
            "path": str(path),
            "max_tokens": 8,
            "options": {"max_context": 256},
        }
    return create_app(parse_config({"server": {"max_body_bytes": 1024 * 1024}, "models": models}), manager)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(_app(tmp_path_factory.mktemp("fuzz"))) as url:
        yield url


def check(case: Any, statuses: Counter[int]) -> None:
    response = case.call(timeout=60)
    statuses[response.status_code] += 1
    assert response.status_code < 500, (case.operation.label, response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str), response.text


CORE_FIELDS = ("model", "messages", "max_tokens", "stream", "n", "stop", "temperature", "seed")


def with_model(case: Any, model: str | None, core_only: bool) -> Any:
    """Most generated cases name a configured model, so they reach a backend (not only
    404); some keep only the common fields, so more of them are valid and generate."""
    if model is not None and isinstance(case.body, dict):
        if core_only:
            case.body = {key: value for key, value in case.body.items() if key in CORE_FIELDS}
        case.body["model"] = model
    return case


def test_no_5xx_and_every_4xx_is_an_openai_error(base_url: str) -> None:
    """Every operation of the served schema, positive and negative cases."""
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    counted: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    models = st.sampled_from(["echo", "gpt-4o", *(["tiny"] * 2 if WITH_MLX else []), None])
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cases = st.builds(with_model, operation.as_strategy(generation_mode=mode), models, st.booleans())

            @given(case=cases)
            @settings(
                max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
            )
            def run(case: Any) -> None:
                counted[case.operation.label] += 1
                check(case, statuses)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE
    total = sum(counted.values())
    print(f"\nfuzz cases: {total} over {len(counted)} operations: {dict(counted)}; statuses {dict(statuses)}")
    assert len(counted) >= 5 and total >= len(counted) * 2 and statuses[200] > 0
