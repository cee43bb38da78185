"""A plugin installed as its own package is found through the `gateway` entry-point group.

The package is docs/examples/gateway_shout.py with docs/examples/pyproject.toml,
installed the way pip would: the module and a `*.dist-info` (METADATA and
entry_points.txt written from the pyproject) in a directory on sys.path.
Offline, and removed again afterwards.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway.plugins import ENTRY_POINT_GROUP
from tests.plugins.helpers import PATHS, ask, client, gateway_config, serve

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def install(project: Path, site: Path) -> list[str]:
    """Write the installed form of a one-module project into `site`; returns its module names."""
    metadata = tomllib.loads((project / "pyproject.toml").read_text())
    name, version = metadata["project"]["name"], metadata["project"]["version"]
    modules = metadata["tool"]["setuptools"]["py-modules"]
    for module in modules:
        shutil.copy(project / f"{module}.py", site / f"{module}.py")
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    entry_points = metadata["project"]["entry-points"][ENTRY_POINT_GROUP]
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return modules


@pytest.fixture(scope="module")
def installed_shout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    site = tmp_path_factory.mktemp("site-packages")
    modules = install(EXAMPLES, site)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for module in modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()


@pytest.mark.hooks("on_chunk")
@pytest.mark.parametrize("path", PATHS)
def test_installed_package_is_discovered_and_used(installed_shout: None, path: str) -> None:
    config = gateway_config()
    with serve(config) as base_url:  # the production plugin manager: no test wiring
        assert ask(base_url, path).content == "THE QUICK BROWN FOX"


@pytest.mark.hooks("rewrite_request")
def test_installed_package_can_be_disabled_by_its_entry_point_name(installed_shout: None) -> None:
    with serve(gateway_config(disabled=["shout"])) as base_url:
        assert ask(base_url, "non-stream").content == "the quick brown fox"
        client(base_url).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "forbidden"}]
        )
    with serve(gateway_config()) as base_url, pytest.raises(openai.BadRequestError):
        client(base_url).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "forbidden"}]
        )


def test_the_example_package_depends_on_this_project() -> None:
    """Its dependency is this project's distribution name (not PyPI's unrelated `gateway`)."""
    ours = tomllib.loads((EXAMPLES.parents[1] / "pyproject.toml").read_text())["project"]["name"]
    example = tomllib.loads((EXAMPLES / "pyproject.toml").read_text())["project"]
    assert ours != "gateway"
    assert example["dependencies"] == [ours]
