"""POST /v1/responses/compact and the `compaction` item a later request takes as input."""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.endpoints.responses import compaction
from gateway.errors import InvalidRequest
from gateway.protocol import Message

HISTORY = [
    {"type": "message", "role": "user", "content": "We launch on Tuesday."},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Noted: Tuesday."}]},
]


def test_compact_answers_one_compaction_item_a_later_request_continues_from(
    base_url: str, client: openai.OpenAI
) -> None:
    answer = httpx.post(
        f"{base_url}/v1/responses/compact",
        json={"model": "echo", "input": HISTORY, "prompt_cache_key": "k", "instructions": "Be brief."},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "response.compaction" and body["id"].startswith("cmp_")
    [item] = body["output"]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_")
    assert set(body["usage"]) >= {"input_tokens", "output_tokens", "total_tokens"}
    direct = client.responses.create(model="echo", input=[*HISTORY, {"role": "user", "content": "When?"}])
    compacted = client.responses.create(model="echo", input=[item, {"role": "user", "content": "When?"}])
    assert compacted.output_text == "When?"
    assert compacted.usage.input_tokens == direct.usage.input_tokens  # the same conversation


def test_compact_continues_a_stored_response(base_url: str, client: openai.OpenAI) -> None:
    first = client.responses.create(model="echo", input="a b c")
    body = httpx.post(
        f"{base_url}/v1/responses/compact", json={"model": "echo", "previous_response_id": first.id}
    ).json()
    messages = compaction.unpack(body["output"][0]["encrypted_content"], "x")
    assert [(m.role, m.text()) for m in messages] == [("user", "a b c"), ("assistant", "a b c")]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": HISTORY}, 400, "model"),
        ({"model": "nope", "input": HISTORY}, 404, "model"),
        ({"model": "echo"}, 400, "input"),
        ({"model": "echo", "input": HISTORY, "stream": True}, 400, "stream"),
        ({"model": "echo", "input": "hi", "previous_response_id": "resp_gone"}, 400, "previous_response_id"),
    ],
)
def test_bad_compact_requests(base_url: str, body: dict, status: int, param: str) -> None:
    answer = httpx.post(f"{base_url}/v1/responses/compact", json=body)
    assert answer.status_code == status and answer.json()["error"]["param"] == param


def test_a_damaged_compaction_item_is_a_400(base_url: str) -> None:
    for content in ("opaque-from-elsewhere", compaction.PREFIX + "!!!"):
        item = {"type": "compaction", "encrypted_content": content}
        answer = httpx.post(f"{base_url}/v1/responses", json={"model": "echo", "input": [item, "x"][:1]})
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "input[0].encrypted_content"


def test_pack_and_unpack_round_trip() -> None:
    messages = [Message(role="user", content="hi"), Message(role="assistant", content="hello")]
    assert compaction.unpack(compaction.pack(messages), "p") == messages
    with pytest.raises(InvalidRequest):
        compaction.unpack(compaction.PREFIX + "e30=", "p")  # "{}": not a message list
