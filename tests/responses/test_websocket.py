"""WebSocket mode on /v1/responses: `response.create` messages, one JSON event per message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


@pytest.fixture
def socket(base_url: str) -> Iterator[ClientConnection]:
    with connect(base_url.replace("http://", "ws://") + "/v1/responses") as connection:
        yield connection


def turn(socket: ClientConnection, **body: Any) -> list[dict[str, Any]]:
    """Send one `response.create` and read its events up to the terminal one."""
    socket.send(json.dumps({"type": "response.create", "model": "echo", **body}))
    events = []
    while not events or events[-1]["type"] not in TERMINAL:
        message = socket.recv(timeout=10)
        assert isinstance(message, str)  # text frames, as OpenAI sends
        events.append(json.loads(message))
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")


def test_several_responses_in_sequence_on_one_socket(socket: ClientConnection) -> None:
    first, second = turn(socket, input="first", store=False), turn(socket, input="second one", store=False)
    assert [text_of(first), text_of(second)] == ["first", "second one"]
    assert first[0]["type"] == "response.created" and first[-1]["type"] == "response.completed"
    assert [event["sequence_number"] for event in second] == list(range(len(second)))
    assert first[-1]["response"]["id"] != second[-1]["response"]["id"]


def test_continuation_on_the_same_socket_even_with_store_false(
    socket: ClientConnection, base_url: str
) -> None:
    first = turn(socket, input="a b c", store=False)
    previous = first[-1]["response"]["id"]
    second = turn(socket, input="d e", store=False, previous_response_id=previous)
    assert second[-1]["type"] == "response.completed"
    assert second[-1]["response"]["usage"]["input_tokens"] == 4 + 4 + 3  # the history came along
    with connect(base_url.replace("http://", "ws://") + "/v1/responses") as other:
        [error] = turn(other, input="d e", store=False, previous_response_id=previous)
    assert error == {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "previous_response_not_found",
            "message": f"Previous response with id '{previous}' not found.",
            "param": "previous_response_id",
        },
    }


def test_a_failed_continuation_evicts_the_response(socket: ClientConnection) -> None:
    previous = turn(socket, input="remember ember", store=False)[-1]["response"]["id"]
    [failed] = turn(
        socket,
        store=False,
        previous_response_id=previous,
        input=[{"type": "function_call_output", "call_id": "call_missing", "output": "x"}],
    )
    assert failed["error"]["param"] == "input[0].call_id"
    [retry] = turn(socket, store=False, previous_response_id=previous, input="again")
    assert retry["error"]["code"] == "previous_response_not_found"
    assert text_of(turn(socket, input="still open")) == "still open"  # the socket lives on


def test_bad_messages_get_an_error_event(socket: ClientConnection) -> None:
    socket.send(json.dumps({"type": "response.cancel"}))
    assert json.loads(socket.recv(timeout=10))["error"]["param"] == "type"
    socket.send("not json")
    assert json.loads(socket.recv(timeout=10))["error"]["code"] == "invalid_json"
    [error] = turn(socket, input="hi", background=True)
    assert error["status"] == 400 and error["error"]["param"] == "background"


def test_generate_false_warms_up_and_keeps_the_input(socket: ClientConnection) -> None:
    warm = turn(socket, input="a b c", store=False, generate=False)
    assert [event["type"] for event in warm] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert warm[-1]["response"]["output"] == []
    follow = turn(socket, input="d", store=False, previous_response_id=warm[-1]["response"]["id"])
    assert text_of(follow) == "d" and follow[-1]["response"]["usage"]["input_tokens"] == 4 + 2


def test_a_stored_response_continues_on_a_socket(socket: ClientConnection, client: Any) -> None:
    stored = client.responses.create(model="echo", input="x y")
    events = turn(socket, input="z", previous_response_id=stored.id)
    assert events[-1]["response"]["usage"]["input_tokens"] == 3 + 3 + 2


def test_a_failure_mid_stream_ends_with_response_failed(socket: ClientConnection) -> None:
    events = turn(socket, model="broken", input="a b c d")
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "backend_error"
    assert "error" not in [event["type"] for event in events]  # one terminal event per turn
