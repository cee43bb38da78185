"""The command line as a new user meets it: where the server listens, `gateway pull`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[models.echo]
backend = "echo"
aliases = ["e"]

[models.local]
backend = "mlx"
path = "{missing}"
"""


def gateway(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(missing=tmp_path / "nowhere.gguf"))
    return config


def test_serve_logs_where_it_listens_and_what_it_serves(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--config",
        str(write_config(tmp_path)),
        "--port",
        "0",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            found = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
            if found:
                break
        else:
            raise AssertionError("no 'listening on' line")
        assert int(found.group(2)) != 0  # the port actually bound
        assert "echo (aliases: e), local" in line
        assert httpx.get(f"{found.group(1)}/health", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_pull_names_what_is_served_when_the_model_is_unknown(tmp_path: Path) -> None:
    done = gateway("pull", "--config", str(write_config(tmp_path)), "nope")
    assert done.returncode == 2
    assert "no model 'nope'" in done.stderr and "served: echo (aliases: e), local" in done.stderr


def test_pull_says_what_cannot_be_had(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    missing = gateway("pull", "--config", config, "local")
    assert missing.returncode == 1
    assert "no model directory or GGUF file at" in missing.stderr
    echo = gateway("pull", "--config", config, "e")
    assert echo.returncode == 0 and "nothing to pull" in echo.stdout
