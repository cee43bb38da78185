"""The bounded response store: count and bytes capped, oldest evicted first."""

from __future__ import annotations

from gateway import parse_config
from gateway.endpoints.responses.store import ResponseStore, stored
from gateway.protocol import Message


def entry(size: int) -> object:
    return stored(b"x" * size, [], "echo", None)


def test_the_oldest_go_first_past_the_count() -> None:
    store = ResponseStore(max_count=2, max_bytes=10_000)
    for name in "abc":
        store.put(name, entry(10))  # type: ignore[arg-type]
    assert list(store.entries) == ["b", "c"] and store.bytes == 2 * (10 + 2)  # body + "[]"


def test_the_oldest_go_first_past_the_bytes() -> None:
    store = ResponseStore(max_count=100, max_bytes=100)
    store.put("a", entry(40))  # type: ignore[arg-type]
    store.put("b", entry(40))  # type: ignore[arg-type]
    store.put("c", entry(40))  # type: ignore[arg-type]
    assert list(store.entries) == ["b", "c"] and store.bytes == 84
    store.put("huge", entry(500))  # type: ignore[arg-type]
    assert "huge" not in store.entries and store.get("huge") is None


def test_sizes_count_the_history_and_delete_frees_them() -> None:
    history = [Message(role="user", content="hello " * 50)]
    item = stored(b"{}", history, "echo", None)
    assert item.size > 300
    store = ResponseStore(max_count=10, max_bytes=10_000)
    store.put("a", item)
    store.put("a", item)  # replacing counts once
    assert store.bytes == item.size
    assert store.delete("a") and not store.delete("a") and store.bytes == 0


def test_the_caps_are_server_config_keys() -> None:
    config = parse_config({"server": {"responses_store_max_count": 3, "responses_store_max_bytes": 4096}})
    assert (config.server.responses_store_max_count, config.server.responses_store_max_bytes) == (3, 4096)
