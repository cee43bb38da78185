"""use_fast_blas: what it reports, in fresh interpreters (it only works before `import mlx`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backends.mlx.blas import INSTALL_HINT, candidate_paths

ROOT = Path(__file__).resolve().parents[2]

MATMUL = """
import mlx.core as mx
mx.random.seed(0)
a = mx.random.normal((64, 96))
b = mx.random.normal((96, 128))
product = (a @ b).tolist()
"""


def run(code: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object last."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_with(enabled: bool) -> dict:
    setup = f"import json\nfrom backends.mlx.blas import use_fast_blas\nresult = use_fast_blas({enabled})\n"
    report = (
        'mapped = "openblas" in open("/proc/self/maps").read()\n'
        'print(json.dumps({"status": result.status, "path": result.path, "product": product, "mapped": mapped}))\n'
    )
    return run(setup + MATMUL + report)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux-only")
def test_loaded_blas_gives_the_same_numbers_as_the_bundled_one() -> None:
    fast, plain = matmul_with(True), matmul_with(False)
    assert plain["status"] == "disabled" and plain["path"] is None
    assert plain["mapped"] is False  # the wheel's bundled BLAS is not OpenBLAS
    if candidate_paths():
        assert fast["status"] == "loaded"
        assert fast["path"] in candidate_paths()
        assert fast["mapped"] is True
    else:
        assert fast["status"] == "not_found"
    flat_fast = [x for row in fast["product"] for x in row]
    flat_plain = [x for row in plain["product"] for x in row]
    assert len(flat_fast) == 64 * 128
    assert flat_fast == pytest.approx(flat_plain, rel=1e-4, abs=1e-4)


def test_too_late_after_mlx_is_imported_and_never_raises() -> None:
    outcome = run(
        """
        import json
        import mlx.core
        from backends.mlx.blas import use_fast_blas
        result = use_fast_blas()
        print(json.dumps({"status": result.status, "message": result.message}))
        """
    )
    expected = "too_late" if sys.platform.startswith("linux") else "not_linux"
    assert outcome["status"] == expected


def test_every_other_outcome_is_reported_not_raised() -> None:
    outcome = run(
        """
        import json, sys
        from backends.mlx import blas

        statuses = {}
        statuses["disabled"] = blas.use_fast_blas(False).status
        real_platform = sys.platform
        sys.platform = "darwin"
        statuses["darwin"] = blas.use_fast_blas().status
        sys.platform = real_platform
        blas.candidate_paths = lambda: []
        missing = blas.use_fast_blas()
        statuses["missing"] = missing.status
        statuses["hint"] = missing.message
        blas.candidate_paths = lambda: ["/nonexistent/libopenblas.so.0", "libc.so.6"]
        broken = blas.use_fast_blas()
        statuses["broken"] = broken.status
        statuses["broken_message"] = broken.message
        def explode():
            raise RuntimeError("boom")
        blas.candidate_paths = explode
        statuses["explode"] = blas.use_fast_blas().status
        statuses["mlx_imported"] = "mlx" in sys.modules
        print(json.dumps(statuses))
        """
    )
    assert outcome["disabled"] == "disabled"
    assert outcome["darwin"] == "not_linux"
    if sys.platform.startswith("linux"):
        assert outcome["missing"] == "not_found"
        assert INSTALL_HINT in outcome["hint"]
        assert outcome["broken"] == "failed"
        assert "no cblas_sgemm" in outcome["broken_message"] and "/nonexistent" in outcome["broken_message"]
        assert outcome["explode"] == "failed"
    assert outcome["mlx_imported"] is False
