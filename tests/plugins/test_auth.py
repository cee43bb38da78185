"""plugins/auth.py: API keys, allowed models, rate limits; the key never logged."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import openai
import pytest
from websockets.sync.client import connect

from gateway import ConfigError, RateLimited, RequestContext, create_app
from plugins.auth import ApiKeyAuth, AuthSettings
from tests.plugins.helpers import (
    PATHS,
    RESPONSES_PATHS,
    USER,
    ask,
    captured_logs,
    client,
    gateway_config,
    rendered,
    serve,
)

pytestmark = pytest.mark.hooks("authenticate")

ALICE_KEY = "sk-alice-0123456789abcdef"
BOB_KEY = "sk-bob-fedcba9876543210"
WRONG_KEY = "sk-wrong-0000000000000000"


def auth_settings(alice_key: str = ALICE_KEY, **bob: Any) -> dict[str, Any]:
    keys = [
        {"id": "alice", "key": alice_key},
        {"id": "bob", "key": BOB_KEY, "models": ["echo-alias"], **bob},
    ]
    return {"auth": {"keys": keys}}


@pytest.fixture(scope="module")
def auth_server() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEST_ALICE_KEY", ALICE_KEY)  # a `${ENV}` reference in config
        config = gateway_config(auth_settings("${TEST_ALICE_KEY}"))
    with serve(config) as base_url:
        yield base_url


@pytest.mark.parametrize("path", PATHS + RESPONSES_PATHS)
def test_valid_key_is_accepted_on_every_path(auth_server: str, path: str) -> None:
    assert ask(auth_server, path, api_key=ALICE_KEY).content == "the quick brown fox"


def test_a_stored_response_is_its_callers_only(auth_server: str) -> None:
    alice, bob = client(auth_server, ALICE_KEY), client(auth_server, BOB_KEY)
    response = alice.responses.create(model="echo", input="mine")
    assert alice.responses.retrieve(response.id).output_text == "mine"
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(response.id)
    with pytest.raises(openai.AuthenticationError):
        client(auth_server, WRONG_KEY).responses.retrieve(response.id)
    with pytest.raises(openai.AuthenticationError):
        client(auth_server, WRONG_KEY).responses.create(model="echo", input="hi")
    alice.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(response.id)


def test_only_its_caller_may_continue_a_stored_response(auth_server: str) -> None:
    """Bob cannot read Alice's conversation by continuing it, by any route."""
    alice, bob = client(auth_server, ALICE_KEY), client(auth_server, BOB_KEY)
    secret = alice.responses.create(model="echo", input="alice's secret")
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            bob.responses.create(model="echo", input="repeat", previous_response_id=secret.id, stream=stream)
        assert (refused.value.code, refused.value.param) == ("previous_response_not_found", "previous_response_id")
    compact = httpx.post(
        f"{auth_server}/v1/responses/compact",
        json={"model": "echo", "previous_response_id": secret.id},
        headers={"authorization": f"Bearer {BOB_KEY}"},
    )
    assert compact.status_code == 400 and "secret" not in compact.text
    url = auth_server.replace("http://", "ws://") + "/v1/responses"
    with connect(url, additional_headers={"authorization": f"Bearer {BOB_KEY}"}) as socket:
        socket.send(json.dumps({"type": "response.create", "model": "echo", "previous_response_id": secret.id}))
        event = json.loads(socket.recv(timeout=10))
        assert event["type"] == "error" and event["error"]["code"] == "previous_response_not_found"
    follow = alice.responses.create(model="echo", input="again", previous_response_id=secret.id)
    assert follow.previous_response_id == secret.id


def test_x_api_key_header_is_accepted(auth_server: str) -> None:
    body = {"model": "echo", "messages": USER}
    response = httpx.post(f"{auth_server}/v1/chat/completions", json=body, headers={"x-api-key": BOB_KEY})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("key", [None, WRONG_KEY])
def test_missing_or_unknown_key_is_401(auth_server: str, key: str | None) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": "echo", "messages": USER}
    response = httpx.post(f"{auth_server}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert WRONG_KEY not in response.text
    with pytest.raises(openai.AuthenticationError):
        client(auth_server, WRONG_KEY).chat.completions.create(model="echo", messages=USER)


def test_model_the_key_may_not_use_is_403(auth_server: str) -> None:
    bob = client(auth_server, BOB_KEY)
    # Bob's key names the alias; the model's own id is allowed too.
    assert bob.chat.completions.create(model="echo", messages=USER).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as raised:
        bob.chat.completions.create(model="system", messages=USER)
    error = raised.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("model_not_allowed", "model")
    with pytest.raises(openai.PermissionDeniedError):
        bob.chat.completions.create(model="system", messages=USER, stream=True)


def test_health_needs_no_key(auth_server: str) -> None:
    assert httpx.get(f"{auth_server}/health").status_code == 200


def test_model_listing_needs_a_key_and_shows_the_keys_models(auth_server: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(auth_server, WRONG_KEY).models.list()
    assert httpx.get(f"{auth_server}/v1/models").status_code == 401
    assert {model.id for model in client(auth_server, ALICE_KEY).models.list()} == {
        "echo",
        "system",
        "broken",
    }
    bob = client(auth_server, BOB_KEY)
    assert [model.id for model in bob.models.list()] == ["echo"]  # his key names the alias
    assert bob.models.retrieve("echo-alias").id == "echo"
    with pytest.raises(openai.PermissionDeniedError) as raised:
        bob.models.retrieve("system")
    assert raised.value.code == "model_not_allowed"


@pytest.mark.parametrize(
    "limit",
    # One request a minute; or 5 tokens a minute, which the first answer (9 tokens) uses up.
    [{"requests_per_minute": 1}, {"tokens_per_minute": 5}],
)
@pytest.mark.hooks("on_response")
def test_rate_limits_answer_429_with_retry_after(limit: dict[str, int]) -> None:
    with serve(gateway_config(auth_settings(**limit))) as base_url:
        bob = client(base_url, BOB_KEY)
        bob.chat.completions.create(model="echo", messages=USER)
        with captured_logs() as entries, pytest.raises(openai.RateLimitError) as raised:
            bob.chat.completions.create(model="echo", messages=USER, stream=True)
        response = raised.value.response
        refused = [entry for entry in entries if entry["event"] == "request" and entry["status"] == 429]
        assert [record["key_id"] for record in refused] == ["bob"]  # the access log says whose
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(response.headers["retry-after"]) >= 1
        assert BOB_KEY not in response.text
        assert [model.id for model in bob.models.list()] == ["echo"]  # listing counts for nothing
        # Other keys have their own budget.
        client(base_url, ALICE_KEY).chat.completions.create(model="echo", messages=USER)


def test_keys_never_reach_the_logs(auth_server: str) -> None:
    with captured_logs() as entries:
        ask(auth_server, "non-stream", api_key=ALICE_KEY)
        ask(auth_server, "stream", api_key=BOB_KEY)
        for key, model in [(WRONG_KEY, "echo"), (BOB_KEY, "system"), (ALICE_KEY, "no-such-model")]:
            with pytest.raises(openai.APIStatusError):
                client(auth_server, key).chat.completions.create(model=model, messages=USER)
    text = rendered(entries)
    records = [entry for entry in entries if entry["event"] == "request"]
    assert len(records) == 5
    assert {record["key_id"] for record in records} == {"alice", "bob", None}
    for secret in (ALICE_KEY, BOB_KEY, WRONG_KEY):
        assert secret not in text


@pytest.mark.hooks("gateway_startup")
def test_open_gateway_warns_once_at_startup() -> None:
    with captured_logs() as entries, serve(gateway_config()) as base_url:
        ask(base_url, "non-stream")
        ask(base_url, "non-stream")
    warnings = [entry for entry in entries if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and "no API keys" in warnings[0]["event"]
    with captured_logs() as entries, serve(gateway_config(auth_settings())):
        pass
    assert not [entry for entry in entries if "no API keys" in entry["event"]]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([{"id": "a", "key": ""}], "keys[0].key"),
        ([{"id": "a", "key": "x", "modles": ["*"]}], "keys[0]: unknown key 'modles'"),
        ([{"id": "a", "key": "x"}, {"id": "a", "key": "y"}], "keys[1].id: 'a' is used twice"),
        ([{"id": "a", "key": "x"}, {"id": "b", "key": "x"}], "keys[1].key: the same secret"),
        ([{"id": "a", "key": "x", "requests_per_minute": 0}], "keys[0].requests_per_minute"),
    ],
)
def test_bad_settings_name_the_key(keys: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=r"plugins\.settings\.auth\.") as raised:
        create_app(gateway_config({"auth": {"keys": keys}}))
    assert message in str(raised.value)


def test_buckets_refill_with_time() -> None:
    now = [1000.0]
    settings = msgspec.convert(
        {"keys": [{"id": "k", "key": "s3cret", "requests_per_minute": 2}]}, AuthSettings
    )
    plugin = ApiKeyAuth(settings, clock=lambda: now[0])
    headers = {"x-api-key": "s3cret"}
    for _ in range(2):
        assert plugin.authenticate(headers, RequestContext("r", "chat")).key_id == "k"
    with pytest.raises(RateLimited) as raised:
        plugin.authenticate(headers, RequestContext("r", "chat"))
    assert raised.value.headers["Retry-After"] == "30"  # one request per 30 s comes back
    now[0] += 30
    assert plugin.authenticate(headers, RequestContext("r", "chat")).key_id == "k"


def test_unknown_model_404_lists_only_the_keys_models(auth_server: str) -> None:
    for path in ("/v1/chat/completions", "/v1/models/nope"):
        body = {"model": "nope", "messages": USER}
        for key, served in [
            (BOB_KEY, "echo (aliases: echo-alias)"),
            (ALICE_KEY, "echo (aliases: echo-alias), system"),
        ]:
            headers = {"authorization": f"Bearer {key}"}
            if path.endswith("nope"):
                response = httpx.get(f"{auth_server}{path}", headers=headers)
            else:
                response = httpx.post(f"{auth_server}{path}", json=body, headers=headers)
            assert response.status_code == 404
            message = response.json()["error"]["message"]
            assert f"this gateway serves: {served}" in message
            if key == BOB_KEY:
                assert "system" not in message  # models the key may not use stay unnamed


def test_a_body_that_does_not_decode_is_recorded_with_its_key(auth_server: str) -> None:
    with captured_logs() as entries:
        refused = httpx.post(
            f"{auth_server}/v1/chat/completions",
            content=b"{not json",
            headers={"authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"},
        )
    assert refused.status_code == 400
    [record] = [entry for entry in entries if entry["event"] == "request"]
    assert (record["status"], record["key_id"]) == (400, "alice")
    assert ALICE_KEY not in str(entries)


def test_only_secrets_that_matched_are_remembered() -> None:
    settings = msgspec.convert(
        {"keys": [{"id": "a", "key": "s3cret-a"}, {"id": "b", "key": "s3cret-b"}]}, AuthSettings
    )
    plugin = ApiKeyAuth(settings)
    for secret in ("wrong", "s3cret-b", "s3cret-b", "s3cret-a", "wrong"):
        found = plugin.find(secret)
        assert (found.identity.key_id if found else None) == {"wrong": None}.get(secret, secret[-1])
    assert set(plugin.matched) == {"s3cret-a", "s3cret-b"}
