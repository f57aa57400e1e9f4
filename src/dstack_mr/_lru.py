"""The one bounded, thread-safe memo the caches of this package share."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """Least-recently-used memo of at most ``maxsize`` entries, computing each key once.

    ``compute`` runs outside the cache lock, so a slow computation (a QEMU run for ACPI
    tables, a kernel hash) never blocks readers of other keys; threads missing the same key
    wait for the first one instead of repeating its work. A failing ``compute`` caches
    nothing, and the next waiter tries again.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._data: OrderedDict[K, V] = OrderedDict()
        #: Per-key gate (lock, number of threads using it) while some thread computes the key.
        self._gates: dict[K, tuple[threading.Lock, int]] = {}

    def _get(self, key: K) -> tuple[bool, V | None]:
        # Caller holds self._lock.
        if key in self._data:
            self._data.move_to_end(key)
            return True, self._data[key]
        return False, None

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            hit, value = self._get(key)
            if hit:
                return value  # type: ignore[return-value]
            gate, users = self._gates.get(key, (threading.Lock(), 0))
            self._gates[key] = (gate, users + 1)
        try:
            with gate:
                with self._lock:
                    hit, value = self._get(key)
                if hit:
                    return value  # type: ignore[return-value]
                computed = compute()
                with self._lock:
                    self._data[key] = computed
                    while len(self._data) > self.maxsize:
                        self._data.popitem(last=False)
                return computed
        finally:
            with self._lock:
                gate, users = self._gates[key]
                if users == 1:
                    del self._gates[key]
                else:
                    self._gates[key] = (gate, users - 1)

    def __len__(self) -> int:
        return len(self._data)
