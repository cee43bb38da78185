"""The internal requests of the raw-prompt endpoints: legacy completions and embeddings.

Both are chat requests (`ChatCompletionRequest` subclasses), so every plugin hook
sees the request type it knows and `replace` keeps the extra fields. What a
plugin sees: `messages` holds one user message per prompt (or embedding input),
in order, whose text is that prompt; a prompt sent as token ids is an empty user
message. A plugin may rewrite a prompt's text (the model then sees the new
text, still without a chat template); messages of other roles (a rewrite rule's
system prompt) have no place in a raw prompt and are left out of it.

The extra fields are request fields like any other: a backend honours raw
prompts by listing `prompt` (and `echo`, `best_of`, `suffix`) in its
`supported_fields`, and embeddings by listing `input` and having an `embed`
method; any other backend gets a 400 naming the field.
"""

from __future__ import annotations

from msgspec import Struct

from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest, Message

RawPrompt = str | list[int]


class CompletionRequest(ChatCompletionRequest, kw_only=True):
    """POST /v1/completions inside the gateway: one choice per prompt times `n`,
    numbered prompt-major (prompt 0's n choices first); `choice_count` counts them all.

    `prompt[i]` is prompt i's token ids when the client sent ids, else None (its
    text is user message i). `echo`: each choice starts with its prompt (and with
    `logprobs`, the prompt tokens' logprobs, the first one's NaN: it has no
    context). `best_of`: the endpoint asks for that many choices per prompt and
    keeps the best (backends only need to accept the field). `suffix`: text that
    follows the completion (fill-in-the-middle)."""

    prompt: list[list[int] | None]
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    @property
    def choice_count(self) -> int:
        return len(self.prompt) * (self.n or 1)

    @property
    def raw_prompts(self) -> list[RawPrompt]:
        return raw_inputs(self, self.prompt, "prompt")


class EmbeddingRequest(ChatCompletionRequest, kw_only=True):
    """POST /v1/embeddings inside the gateway. `input[i]` is input i's token ids when
    the client sent ids, else None (its text is user message i). `dimensions`:
    truncate the vectors to that many and re-normalise."""

    input: list[list[int] | None]
    dimensions: int | None = None

    @property
    def raw_inputs(self) -> list[RawPrompt]:
        return raw_inputs(self, self.input, "input")


def _own_fields(request_type: type[ChatCompletionRequest]) -> frozenset[str]:
    return frozenset(request_type.__struct_fields__) - frozenset(ChatCompletionRequest.__struct_fields__)


# The raw-prompt requests' own fields, which backends declare like any request field.
PROMPT_FIELDS = _own_fields(CompletionRequest) | _own_fields(EmbeddingRequest)


class Embeddings(Struct):
    """What `Backend.embed` returns: one unit vector per input, in order."""

    vectors: list[list[float]]
    prompt_tokens: int


def is_token_id(item: object) -> bool:
    """A JSON value that can be a token id (booleans are not, though Python says int)."""
    return isinstance(item, int) and not isinstance(item, bool) and item >= 0


def prompt_messages(prompts: list[RawPrompt]) -> list[Message]:
    """The user messages that stand for `prompts` in the internal request."""
    return [Message(role="user", content=p if isinstance(p, str) else "") for p in prompts]


def token_ids(prompts: list[RawPrompt]) -> list[list[int] | None]:
    return [None if isinstance(p, str) else p for p in prompts]


def raw_inputs(request: ChatCompletionRequest, ids: list[list[int] | None], name: str) -> list[RawPrompt]:
    """Each prompt as the model should see it: its (possibly rewritten) text, or its
    token ids while its message is still empty."""
    users = [message for message in request.messages if message.role == "user"]
    if len(users) != len(ids):
        raise InvalidRequest(
            f"the request has {len(ids)} prompts but {len(users)} user messages after rewriting",
            param=name,
        )
    return [
        tokens if tokens is not None and not message.text() else message.text()
        for message, tokens in zip(users, ids, strict=True)
    ]
