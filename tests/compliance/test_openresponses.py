"""The Open Responses compliance suite against the gateway on the echo backend.

The suite (TypeScript, vendored unmodified in `openresponses/`) runs with `bun`
and `zod` from npm, installed once into a cache folder; the test skips, saying
why, when node/npm are missing or the npm registry is out of reach. Every test
passes except `tool-calling`, which needs a model that decides on its own to
call a tool (echo calls one only when told `call <name> <json>`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import create_app, parse_config
from tests.conftest import plugin_manager
from tests.support.server import running_server

SUITE = Path(__file__).parent / "openresponses"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gateway-openresponses"
NEEDS_A_MODEL_THAT_CHOOSES = {"tool-calling"}


def _bun() -> Path:
    """bun with zod beside it, installed from npm into the cache on first use."""
    bun = CACHE / "node_modules" / ".bin" / "bun"
    zod = CACHE / "node_modules" / "zod"
    if not (bun.exists() and zod.exists()):
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: cannot fetch bun and zod for the compliance suite")
        CACHE.mkdir(parents=True, exist_ok=True)
        command = ["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "bun@1", "zod@3"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of bun and zod timed out: is the npm registry reachable?")
        if done.returncode != 0 or not bun.exists():
            pytest.skip(f"npm could not install bun and zod (registry unreachable?): {done.stderr[-500:]}")
    return bun


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = parse_config({"models": {"echo": {"backend": "echo"}}})
    with running_server(create_app(config, plugin_manager())) as url:
        yield url


def test_the_open_responses_compliance_suite_passes(base_url: str) -> None:
    bun = _bun()
    work = CACHE / "suite"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(SUITE, work)
    command = [str(bun), "run", "bin/compliance-test.ts", "--base-url", f"{base_url}/v1"]
    command += ["--api-key", "unused", "--model", "echo", "--json"]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=240, check=False)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the suite did not report: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    results = {result["id"]: result for result in report["results"]}
    failed = {name: result.get("errors") for name, result in results.items() if result["status"] != "passed"}
    assert failed.keys() == NEEDS_A_MODEL_THAT_CHOOSES, json.dumps(failed, indent=2)
    assert len(results) >= 17  # the whole suite ran (17 tests at the vendored commit)
