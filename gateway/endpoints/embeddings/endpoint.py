"""Embeddings on the pipeline: the body becomes an `EmbeddingRequest` (one user
message per input, for plugins), the backend's `embed` answers with unit vectors."""

from __future__ import annotations

import base64
import struct
from typing import Any, ClassVar

import msgspec
from litestar import Request
from litestar.types import ASGIApp

from gateway.backend import GenerationOptions
from gateway.context import RequestContext
from gateway.decoding import decode_body
from gateway.endpoints import error_response, pipeline_of
from gateway.endpoints.embeddings.wire import Embedding, EmbeddingCreate, EmbeddingList, EmbeddingUsage
from gateway.errors import GatewayError, InvalidRequest
from gateway.http import REQUEST_ID_HEADER, JsonResponse, new_context, read_body
from gateway.prompts import EmbeddingRequest, Embeddings, RawPrompt, is_token_id, prompt_messages, token_ids

_decoder = msgspec.json.Decoder(EmbeddingCreate)
_encode = msgspec.json.Encoder().encode
MAX_INPUTS = 2048  # OpenAI's limit


def inputs(value: str | list[Any]) -> list[RawPrompt]:
    """`input` as a list of inputs: a string, strings, token ids, or token-id lists."""
    if isinstance(value, str) or value and all(is_token_id(item) for item in value):
        value = [value]
    if not value:
        raise InvalidRequest("'input' must not be empty", param="input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'input' may hold at most {MAX_INPUTS} inputs", param="input")
    result: list[RawPrompt] = []
    for index, item in enumerate(value):
        if isinstance(item, str) or (isinstance(item, list) and all(is_token_id(i) for i in item)):
            if not item:
                raise InvalidRequest("an input must not be empty", param=f"input[{index}]")
            result.append(item if isinstance(item, str) else list(item))
        else:
            raise InvalidRequest(
                "'input' must be a string, a list of strings, a list of token ids, or a list of token-id lists",
                param=f"input[{index}]",
            )
    return result


def internal_request(body: EmbeddingCreate) -> EmbeddingRequest:
    raw = inputs(body.input)
    return EmbeddingRequest(
        model=body.model,
        messages=prompt_messages(raw),
        input=token_ids(raw),
        dimensions=body.dimensions,
        user=body.user,
    )


def encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def answer(body: EmbeddingCreate, model: str, result: Embeddings) -> bytes:
    data = [
        Embedding(embedding=encoded(vector, body.encoding_format), index=index)
        for index, vector in enumerate(result.vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return _encode(EmbeddingList(data=data, model=model, usage=usage))


class EmbeddingsEndpoint:
    """POST /v1/embeddings: never streams; OpenAI's error objects."""

    name: ClassVar[str] = "embeddings"
    stream_media_type: ClassVar[str] = "text/event-stream"  # unused: embeddings never stream

    def parse(self, body: bytes, context: RequestContext) -> EmbeddingCreate:
        return decode_body(body, _decoder)  # type: ignore[no-any-return]

    def error_body(self, error: GatewayError) -> bytes:
        return _encode(error.to_response())


async def serve_embeddings(endpoint: EmbeddingsEndpoint, request: Request[Any, Any, Any]) -> ASGIApp:
    """`gateway.endpoints.serve` for the pipeline's second kind of work (`Pipeline.embed`)."""
    pipeline = pipeline_of(request)
    context = new_context(request, endpoint.name)
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        body = endpoint.parse(await read_body(request, context.headers), context)
        prepared = await pipeline.prepare(internal_request(body), context)
        options = GenerationOptions(request_id=context.request_id)
        result = await pipeline.embed(prepared, context, options)
        data = answer(body, prepared.entry.id, result)
    except Exception as error:  # noqa: BLE001 - every failure becomes the API's error object
        return await error_response(endpoint, pipeline, context, error, headers)
    return JsonResponse(data, headers)
