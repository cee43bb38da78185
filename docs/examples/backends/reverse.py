"""A backend in one file: it answers with the last user message's words, reversed."""

import asyncio

from gateway import GenerationChunk, GenerationEnd, InvalidRequest, TokenUsage, hookimpl


class ReverseBackend:
    kind = "reverse"
    supported_fields = frozenset({"max_tokens", "n"})  # anything else set is a 400 naming it

    def __init__(self, spec):  # cheap, no side effects: the gateway builds one to check a config
        self.words_per_second = spec.options_as(dict).get("words_per_second", 0)
        self.loaded = False

    async def load(self):
        self.loaded = True  # a real engine reads its weights here

    async def unload(self):
        self.loaded = False

    def memory_estimate(self):
        return 0  # bytes the loaded model takes, for `server.memory_budget`

    def stats(self):
        return {"loaded": self.loaded}

    def validate(self, request):
        if not request.messages[-1].text():
            raise InvalidRequest("there is nothing to reverse", param="messages")

    async def generate(self, request, options):
        reply = request.messages[-1].text().split()[::-1]
        words = reply[: request.max_tokens]  # always set: the model's default when the client sent none
        for choice in range(request.n or 1):
            for index, word in enumerate(words):
                if self.words_per_second:
                    await asyncio.sleep(1 / self.words_per_second)
                yield GenerationChunk(choice=choice, text=word if index == 0 else " " + word)
            yield GenerationChunk(choice=choice, finish_reason="length" if len(words) < len(reply) else "stop")
        prompt = sum(len(message.text().split()) for message in request.messages)
        yield GenerationEnd(usage=TokenUsage(prompt, len(words) * (request.n or 1)))


@hookimpl
def register_backends(register):
    register("reverse", ReverseBackend)
