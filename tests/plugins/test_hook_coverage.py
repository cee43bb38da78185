"""Meta-tests: every hook is tested and documented; plugins and examples use only the public API."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import gateway
from gateway import hookspecs

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
HOOKS = {name: spec for name, spec in vars(hookspecs).items() if hasattr(spec, f"{hookspecs.PROJECT}_spec")}


def marked_hooks() -> dict[str, list[str]]:
    """Hook name -> tests (files) carrying `pytest.mark.hooks(...)` with it."""
    found: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "hooks"
                and ast.unparse(node.func.value) == "pytest.mark"
            ):
                for argument in node.args:
                    assert isinstance(argument, ast.Constant), f"{path}: hook names must be literals"
                    found.setdefault(argument.value, []).append(path.name)
    return found


def guide_sections() -> dict[str, str]:
    text = GUIDE.read_text()
    parts = re.split(r"^### `(\w+)`\n", text, flags=re.MULTILINE)
    return {name: body.split("\n## ")[0] for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_hookspecs_are_found() -> None:
    assert {"authenticate", "on_chunk", "register_tools", "gateway_startup"} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_test(hook: str) -> None:
    assert hook in marked_hooks(), f"no test is marked @pytest.mark.hooks({hook!r})"


def test_marked_names_are_real_hooks() -> None:
    assert set(marked_hooks()) <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_documented_in_the_guide(hook: str) -> None:
    section = guide_sections().get(hook)
    assert section is not None, f"docs/plugins.md has no '### `{hook}`' section"
    for argument in inspect.signature(HOOKS[hook]).parameters:
        assert f"`{argument}`" in section, f"docs/plugins.md: {hook} does not describe `{argument}`"
    assert "**Returns:**" in section and "**Called:**" in section
    sync_only = "Sync only" in (HOOKS[hook].__doc__ or "")
    assert ("**Sync only" in section) == sync_only and ("**Async allowed.**" in section) != sync_only


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hookspec_docstring_says_arguments_return_and_sync(hook: str) -> None:
    doc = HOOKS[hook].__doc__ or ""
    for argument in inspect.signature(HOOKS[hook]).parameters:
        assert f":param {argument}:" in doc
    assert ":return:" in doc
    assert ("Sync only" in doc) != ("Async allowed" in doc)


def test_guide_examples_are_the_real_files() -> None:
    text = GUIDE.read_text()
    blocks = re.findall(r"<!-- (docs/examples/[\w./]+) -->\n```\w*\n(.*?)```", text, flags=re.DOTALL)
    assert {path for path, _ in blocks} == {
        f"docs/examples/{path.name}" for path in (ROOT / "docs" / "examples").iterdir() if path.is_file()
    }
    for path, block in blocks:
        assert block == (ROOT / path).read_text(), f"docs/plugins.md shows an outdated {path}"


@pytest.mark.parametrize(
    "path",
    sorted(
        [
            *(ROOT / "plugins").glob("*.py"),
            *(ROOT / "backends").rglob("*.py"),
            *(ROOT / "docs" / "examples").rglob("*.py"),
        ]
    ),
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_plugins_and_backends_use_only_the_public_api(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gateway":
            assert node.module == "gateway", f"{path.name} imports {node.module}"
            missing = {alias.name for alias in node.names} - set(gateway.__all__)
            assert not missing, f"{path.name} imports {missing}, not in gateway.__all__"
        if isinstance(node, ast.Import):
            assert not any(alias.name.startswith("gateway.") for alias in node.names)
