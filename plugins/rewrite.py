"""Prompt and parameter rewriting, per model, from config.

    [[plugins.settings.rewrite.rules]]
    models = ["*"]                     # ids or aliases; "*" matches every model
    system_prompt = "Be brief. Today is {date}."
    system_mode = "prepend"            # or "replace"
    defaults = { temperature = 0.7 }   # for fields the client left unset
    force = { seed = 0 }               # whatever the client sent
    max = { max_tokens = 256 }         # ceilings: larger values are lowered

Order: rules apply in the order they are listed, each to the previous one's
result; within a rule: system prompt, then `defaults`, then `force`, then `max`.
`prepend` puts the prompt before the client's first system message (merged
into it when there is one); `replace` drops the client's system and developer
messages. Template variables: {date} and {time} (UTC), {model} (the model id),
{key_id} (the caller's key id, or "anonymous"); `{{` and `}}` are literal braces.
`max.max_tokens` also applies when the client set no limit.
"""

from __future__ import annotations

import functools
import string
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from gateway import (
    CEILING_FIELDS,
    SAMPLING_FIELDS,
    ChatCompletionRequest,
    ConfigError,
    GatewayConfig,
    Message,
    RequestContext,
    hookimpl,
    replace,
)

VARIABLES = ("date", "time", "model", "key_id")
PARAMETERS = SAMPLING_FIELDS  # what `defaults` and `force` may set
CEILINGS = CEILING_FIELDS  # what `max` may cap
SYSTEM_ROLES = ("system", "developer")


class RuleSettings(msgspec.Struct, forbid_unknown_fields=True):
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    system_prompt: str | None = None
    system_mode: Literal["prepend", "replace"] = "prepend"
    defaults: dict[str, Any] = {}
    force: dict[str, Any] = {}
    max: dict[str, Any] = {}


class RewriteSettings(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[RuleSettings] = []


class Rule:
    """One checked rule: its models as ids, its parameters decoded like a request's."""

    def __init__(self, settings: RuleSettings, path: str, model_id: Callable[[str], str | None]) -> None:
        self.models = frozenset(model_id(name) or name for name in settings.models)
        self.system_prompt = settings.system_prompt
        self.system_mode = settings.system_mode
        if self.system_prompt is not None:
            _check_template(self.system_prompt, f"{path}.system_prompt")
        self.defaults = _parameters(settings.defaults, PARAMETERS, f"{path}.defaults")
        self.force = _parameters(settings.force, PARAMETERS, f"{path}.force")
        self.max = _parameters(settings.max, CEILINGS, f"{path}.max")

    def matches(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    def apply(self, request: ChatCompletionRequest, variables: tuple[str, ...]) -> ChatCompletionRequest:
        """`variables`: the values of `VARIABLES`, in that order."""
        changes: dict[str, Any] = {}
        if self.system_prompt is not None:
            prompt = _render(self.system_prompt, *variables)
            changes["messages"] = _with_system_prompt(request.messages, prompt, self.system_mode)
        if self.defaults:
            changes.update({k: v for k, v in self.defaults.items() if getattr(request, k) is None})
        if self.force:
            changes.update(self.force)
        for name, ceiling in self.max.items():
            value = changes.get(name, getattr(request, name))
            if (value is None and name == "max_tokens") or (value is not None and value > ceiling):
                changes[name] = ceiling
        return replace(request, **changes) if changes else request


class Rewriter:
    def __init__(self, rules: list[Rule], model_id: Callable[[str], str | None]) -> None:
        self.rules = rules
        self.model_id = model_id
        self.by_model: dict[str, list[Rule]] = {}  # model id -> the rules that match it

    @hookimpl
    def rewrite_request(
        self, request: ChatCompletionRequest, context: RequestContext
    ) -> ChatCompletionRequest | None:
        model = self.model_id(request.model) or request.model
        rules = self.by_model.get(model)
        if rules is None:
            rules = self.by_model[model] = [rule for rule in self.rules if rule.matches(model)]
        if not rules:
            return None
        date, time_of_day = _utc_date_and_time()
        key_id = context.identity.key_id if context.identity else "anonymous"
        variables = (date, time_of_day, model, key_id)
        for rule in rules:
            request = rule.apply(request, variables)
        return request


@functools.lru_cache(maxsize=1024)
def _render(template: str, date: str, time_of_day: str, model: str, key_id: str) -> str:
    """A system prompt, formatted once per minute for each model and key."""
    return template.format(date=date, time=time_of_day, model=model, key_id=key_id)


_minute: tuple[int, str, str] = (-1, "", "")


def _utc_date_and_time() -> tuple[str, str]:
    """Today's date and the time to the minute, UTC, formatted once a minute."""
    global _minute
    minute = int(time.time() // 60)
    if minute != _minute[0]:
        date, time_of_day = time.strftime("%Y-%m-%d %H:%M", time.gmtime(minute * 60)).split()
        _minute = (minute, date, time_of_day)
    return _minute[1], _minute[2]


def _with_system_prompt(messages: list[Message], prompt: str, mode: str) -> list[Message]:
    if mode == "replace":
        return [Message(role="system", content=prompt), *(m for m in messages if m.role not in SYSTEM_ROLES)]
    first = messages[0]
    if first.role == "system" and isinstance(first.content, str):
        return [_replace_message(first, f"{prompt}\n\n{first.content}"), *messages[1:]]
    return [Message(role="system", content=prompt), *messages]


def _replace_message(message: Message, content: str) -> Message:
    return msgspec.structs.replace(message, content=content)


def _check_template(template: str, path: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError(f"{path}: {error} (use {{{{ and }}}} for literal braces)") from None
    for name in names:
        if name not in VARIABLES:
            raise ConfigError(f"{path}: unknown variable {{{name}}} (known: {', '.join(VARIABLES)})")


def _parameters(values: dict[str, Any], allowed: frozenset[str], path: str) -> dict[str, Any]:
    """Check names and values exactly as a request's fields are checked."""
    for name in values:
        if name not in allowed:
            raise ConfigError(f"{path}: '{name}' cannot be set here (allowed: {', '.join(sorted(allowed))})")
    probe = {"model": "-", "messages": [{"role": "user", "content": "-"}], **values}
    try:
        request = msgspec.convert(probe, ChatCompletionRequest)
    except msgspec.ValidationError as error:
        reason, _, where = str(error).partition(" - at `$.")
        field = where.rstrip("`").split(".")[0]
        raise ConfigError(f"{path}.{field}: {reason.replace('`', '')}") from None
    return {name: getattr(request, name) for name in values}


def make_plugin(config: GatewayConfig) -> Rewriter | None:
    settings = config.plugins.settings_for("rewrite", RewriteSettings)
    rules = [
        Rule(rule, f"plugins.settings.rewrite.rules[{index}]", config.model_id)
        for index, rule in enumerate(settings.rules)
    ]
    return Rewriter(rules, config.model_id) if rules else None
