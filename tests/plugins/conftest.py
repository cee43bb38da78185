"""Plugin tests: `@pytest.mark.hooks(...)` names the hooks a test exercises
(tests/plugins/test_hook_coverage.py checks that every hook has one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hooks(*names): the plugin hooks this test exercises")


@pytest.fixture(scope="session", autouse=True)
def plain_tracebacks() -> Iterator[None]:
    """Many of these tests log tracebacks on purpose; rich rendering would make them slow."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ]
    )
    yield
    structlog.configure(**saved)
