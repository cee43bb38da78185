"""config.toml decoding: errors name the key path and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"models": {"llama": {"backend": "mlx", "max_tokens": "x"}}},
            'models."llama".max_tokens: expected int',
        ),
        (
            {"models": {"a/b": {"backend": "mlx", "defaults": {"temperature": 5}}}},
            'models."a/b".defaults.temperature',
        ),
        ({"models": {"x": {}}}, "models.\"x\": missing required key 'backend'"),
        ({"server": {"prot": 1}}, "server: unknown key 'prot'"),
        ({"server": {"port": 70000}}, "server.port: expected int <= 65535"),
        (
            {"models": {"a": {"backend": "echo", "aliases": ["b"]}, "b": {"backend": "echo"}}},
            '"b" is already used',
        ),
        (
            {"models": {"a": {"backend": "echo", "path": "${GATEWAY_TEST_UNSET_VAR}"}}},
            "GATEWAY_TEST_UNSET_VAR",
        ),
    ],
)
def test_errors_name_key_path_and_reason(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config(table)
    assert message in str(caught.value)


def test_env_references_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_PATH", "/models/llama")
    config = parse_config({"models": {"llama": {"backend": "mlx", "path": "${GATEWAY_TEST_PATH}"}}})
    assert config.models["llama"].path == "/models/llama"


def test_default_config_serves_the_seed_model_and_echo() -> None:
    config = load_config(ROOT / "config.toml")
    assert config.models["mlx-community/Llama-3.2-1B-Instruct-4bit"].backend == "mlx"
    assert config.models["mlx-community/Llama-3.2-1B-Instruct-4bit"].preload is False
    assert config.models["echo"].backend == "echo"


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_check_config_and_models(tmp_path: Path) -> None:
    assert gateway_cli("check-config", "config.toml").returncode == 0
    listed = gateway_cli("models", "--config", "config.toml")
    assert "echo  backend: echo" in listed.stdout
    assert "aliases: llama" in listed.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.llama]\nbackend = "mlx"\nmax_tokens = "x"\n')
    result = gateway_cli("check-config", str(bad))
    assert result.returncode == 2
    assert 'models."llama".max_tokens: expected int' in result.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[models.x]\nbackend = "vllm"\n')
    result = gateway_cli("check-config", str(unknown))
    assert result.returncode == 2 and 'unknown backend "vllm"' in result.stderr
    options = tmp_path / "options.toml"
    options.write_text('[models.slow]\nbackend = "echo"\noptions = { delay_ms = "fast" }\n')
    result = gateway_cli("check-config", str(options))
    assert (
        result.returncode == 2 and 'models."slow".options.delay_ms: expected float, got str' in result.stderr
    )


def test_enum_errors_list_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"server": {"log_format": "pretty"}})
    assert (
        str(raised.value) == "server.log_format: invalid value 'pretty'; allowed: 'auto', 'console', 'json'"
    )


def test_backend_option_enum_errors_list_the_allowed_values(tmp_path: Path) -> None:
    options = tmp_path / "dtype.toml"
    options.write_text('[models.m]\nbackend = "mlx"\npath = "some/repo"\noptions = { dtype = "float64" }\n')
    result = gateway_cli("check-config", str(options))
    assert result.returncode == 2
    assert (
        "models.\"m\".options.dtype: invalid value 'float64'; allowed: 'bfloat16', 'float16', 'float32'"
        in (result.stderr)
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"server": {"portt": 1}}, "server: unknown key 'portt'; did you mean 'port'?"),
        (
            {"models": {"x": {"backend": "echo", "preloda": True}}},
            "models.\"x\": unknown key 'preloda'; did you mean 'preload'?",
        ),
        ({"plugins": {"disable": ["auth"]}}, "plugins: unknown key 'disable'; did you mean 'disabled'?"),
        ({"server": {"zzz": 1}}, "server: unknown key 'zzz'"),
    ],
)
def test_unknown_keys_suggest_the_nearest_one(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(table)
    assert str(raised.value) == message


def test_check_config_checks_that_local_model_paths_exist(tmp_path: Path) -> None:
    present = tmp_path / "model.gguf"
    present.write_bytes(b"GGUF")
    config = tmp_path / "paths.toml"
    config.write_text(
        f'[models.here]\nbackend = "mlx"\npath = "{present}"\n\n'
        f'[models.gone]\nbackend = "mlx"\npath = "{tmp_path / "nowhere"}"\n\n'
        '[models.hub]\nbackend = "mlx"\npath = "org/repo"\n'
    )
    result = gateway_cli("check-config", str(config))
    assert result.returncode == 2
    assert f'models."gone".path: no such file or directory: "{tmp_path / "nowhere"}"' in result.stderr
    assert '"here"' not in result.stderr and '"hub"' not in result.stderr
    present.rename(tmp_path / "nowhere")
    assert gateway_cli("check-config", str(config)).returncode == 2  # "here" is now the missing one


def test_plugin_modules_next_to_the_config_file_are_importable(tmp_path: Path) -> None:
    (tmp_path / "my_local_plugin.py").write_text(
        "from gateway import hookimpl\n\n@hookimpl\ndef on_request(request):\n    pass\n"
    )
    config = tmp_path / "plugins.toml"
    config.write_text('[plugins]\nmodules = ["my_local_plugin"]\n\n[models.echo]\nbackend = "echo"\n')
    result = gateway_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    config.write_text('[plugins]\nmodules = ["not_there_plugin"]\n')
    result = gateway_cli("check-config", str(config))
    assert result.returncode == 2
    assert "cannot import plugin module 'not_there_plugin'" in result.stderr
    assert "set PYTHONPATH" in result.stderr  # says where modules are looked for
