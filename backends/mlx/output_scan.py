"""Finding markers and stop strings in text that arrives a few characters at a time.

Both stages keep only a short tail (the part that may still begin a marker or
stop string), so each token costs a few `str.find` calls on a short string,
however long the output grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

CONTENT, REASONING, TOOL = 0, 1, 2
"""Where a span of text goes: `text`, `reasoning`, or a tool call's buffer."""

TextEvent = tuple[int, str]
"""(mode, text): text of one mode."""
MarkEvent = tuple[int, str, int]
"""(old mode, marker, new mode): a marker was matched (and removed)."""


def held_prefix_len(text: str, patterns: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some pattern."""
    size = len(text)
    if not size:
        return 0
    last = text[-1]
    best = 0
    for pattern in patterns:
        if pattern.find(last, 0, len(pattern) - 1) == -1:
            continue  # a held tail is pattern[:k], k < len(pattern): it ends in pattern[:-1]
        start = max(size - len(pattern) + 1, 0)
        first = pattern[0]
        at = text.find(first, start)
        while at != -1 and size - at > best:
            if pattern.startswith(text[at:]):
                best = size - at
                break
            at = text.find(first, at + 1)
    return best


class Segmenter:
    """Splits decoded text at markup markers into spans of one mode each.

    `rules[mode]` lists the (marker, next mode) pairs recognised in that mode;
    a marker whose next mode is the current one is simply removed. Text that
    may be the start of a marker is held back until it is known, so a marker
    split over several tokens is still found and never leaks out as text.
    """

    __slots__ = ("_held", "_markers", "_rules", "mode")

    def __init__(self, rules: Mapping[int, Sequence[tuple[str, int]]], mode: int) -> None:
        self.mode = mode
        self._rules = {m: tuple((k, n) for k, n in r if k) for m, r in rules.items()}
        self._markers = {m: tuple(k for k, _ in r) for m, r in self._rules.items()}
        self._held = ""

    def push(self, text: str, events: list[TextEvent | MarkEvent]) -> None:
        """Append the events this text completes to `events`."""
        buf = self._held + text if self._held else text
        while True:
            found, hit = -1, None
            for rule in self._rules[self.mode]:
                at = buf.find(rule[0])
                if at != -1 and (found == -1 or at < found or (at == found and len(rule[0]) > len(hit[0]))):  # type: ignore[index]
                    found, hit = at, rule
            if hit is None:
                break
            if found:
                events.append((self.mode, buf[:found]))
            events.append((self.mode, hit[0], hit[1]))
            self.mode = hit[1]
            buf = buf[found + len(hit[0]) :]
        keep = held_prefix_len(buf, self._markers[self.mode])
        if keep:
            self._held = buf[-keep:]
            buf = buf[:-keep]
        else:
            self._held = ""
        if buf:
            events.append((self.mode, buf))

    def flush(self, events: list[TextEvent | MarkEvent]) -> None:
        """Release held text as text: the output ended, so it was no marker."""
        if self._held:
            events.append((self.mode, self._held))
            self._held = ""


class Channel:
    """One output stream (content or reasoning) that holds back its tail while it may change.

    Held back: the longest tail that may begin a stop string (so no part of a
    stop string reaches the client), and with `hold_space` trailing
    whitespace, which a caller drops when markup follows it. `lstrip` drops
    leading whitespace, for text right after a marker. Positions are offsets
    in the whole decoded output, for matching logprobs to released text.
    """

    __slots__ = ("held", "held_at", "hold_space", "lstrip", "matched", "stops")

    def __init__(self, stops: Sequence[str] = (), *, hold_space: bool = False) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self.hold_space = hold_space
        self.lstrip = False
        self.held = ""
        self.held_at = 0
        self.matched: str | None = None  # the stop string that ended the output

    def push(self, text: str, at: int) -> tuple[str, int, bool]:
        """(released text, its offset, whether a stop string ended the output).

        On a stop, the released text is everything before the stop string;
        the stop string and all after it are dropped.
        """
        if self.lstrip:
            stripped = text.lstrip()
            if not stripped:
                return "", at, False
            at += len(text) - len(stripped)
            text = stripped
            self.lstrip = False
        if self.held:
            buf, at = self.held + text, self.held_at
        else:
            buf = text
        keep = 0
        if self.stops:
            cut = -1
            for stop in self.stops:
                found = buf.find(stop)
                if found != -1 and (cut == -1 or found < cut):
                    cut, self.matched = found, stop
            if cut != -1:
                self.held = ""
                return buf[:cut], at, True
            keep = held_prefix_len(buf, self.stops)
        if self.hold_space:
            space = len(buf) - len(buf.rstrip())
            keep = max(keep, space)
        if keep:
            self.held = buf[-keep:]
            self.held_at = at + len(buf) - keep
            return buf[:-keep], at, False
        self.held = ""
        return buf, at, False

    def flush(self, *, drop_space: bool) -> tuple[str, int]:
        """Release the held tail (a stop-string start that never completed)."""
        text, at = self.held, self.held_at
        self.held = ""
        return (text.rstrip() if drop_space else text), at
