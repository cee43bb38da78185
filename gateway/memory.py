"""Giving freed memory back to the operating system after a model unloads.

Dropping a model's arrays frees them, but glibc keeps large freed blocks in its
arenas: after the first unload its dynamic mmap threshold rises, so the next
model's weights come from the heap and stay in the process after they are
freed (measured: RSS stuck at the loaded size from the second load/unload
cycle on). `malloc_trim(0)` returns that memory; elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def release_free_memory() -> None:
    """Collect garbage, then hand free heap memory back to the OS where glibc allows."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
