"""Redact words and patterns from the output: an example of the `on_chunk` hook.

    [plugins.settings.redact]
    words = ["hunter2"]                       # whole words, any case
    patterns = ['\\b\\d{3}-\\d{2}-\\d{4}\\b']     # Python regular expressions
    replacement = "[redacted]"
    max_holdback = 128                        # characters held back at most

Models emit pieces of words, so each choice's text (and reasoning) is held
back until a whitespace ends a word (or `max_holdback` characters wait, or the
choice finishes), then redacted and released. Streamed and non-streamed answers
are built from the same chunks, so both are redacted identically. A match that
spans a released boundary (a pattern containing whitespace) may be missed.
Requests asking for `logprobs` are refused: they would show the tokens.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from gateway import (
    ChatCompletionRequest,
    ConfigError,
    GatewayConfig,
    GenerationChunk,
    InvalidRequest,
    RequestContext,
    hookimpl,
)

FIELDS = ("text", "reasoning")


class RedactSettings(msgspec.Struct, forbid_unknown_fields=True):
    words: list[str] = []
    patterns: list[str] = []
    replacement: str = "[redacted]"
    max_holdback: Annotated[int, msgspec.Meta(ge=1)] = 128


class Redactor:
    def __init__(self, pattern: re.Pattern[str], settings: RedactSettings) -> None:
        self.pattern = pattern
        self.replacement = settings.replacement
        self.max_holdback = settings.max_holdback

    @hookimpl
    def on_request(self, request: ChatCompletionRequest) -> None:
        if request.logprobs:
            raise InvalidRequest("'logprobs' are not available while output is redacted", param="logprobs")

    @hookimpl
    def on_chunk(self, chunk: GenerationChunk, context: RequestContext) -> GenerationChunk | None:
        held: dict[tuple[int, str], str] = context.state.setdefault("redact", {})
        changes = {}
        for field in FIELDS:
            key = (chunk.choice, field)
            pending = held.pop(key, "") + getattr(chunk, field)
            if not pending:
                continue
            release, keep = self.split(pending, final=chunk.finish_reason is not None)
            if keep:
                held[key] = keep
            released = self.pattern.sub(self.replacement, release)
            if released != getattr(chunk, field):
                changes[field] = released
        return msgspec.structs.replace(chunk, **changes) if changes else None

    def split(self, text: str, final: bool) -> tuple[str, str]:
        """What can be released now (whole words) and what must wait for more."""
        if final or len(text) > self.max_holdback:
            return text, ""
        match = _LAST_SPACE.search(text)
        if match is None:
            return "", text
        return text[: match.end()], text[match.end() :]


_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


def compile_pattern(settings: RedactSettings) -> re.Pattern[str]:
    parts = [rf"(?i:\b{re.escape(word)}\b)" for word in settings.words]
    for index, pattern in enumerate(settings.patterns):
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(
                f"plugins.settings.redact.patterns[{index}]: invalid pattern: {error}"
            ) from None
        parts.append(f"(?:{pattern})")
    return re.compile("|".join(parts))


def make_plugin(config: GatewayConfig) -> Redactor | None:
    settings = config.plugins.settings_for("redact", RedactSettings)
    if not settings.words and not settings.patterns:
        return None
    return Redactor(compile_pattern(settings), settings)
