"""A dict bounded by least recent use: the collector's token and parser caches.

(An OrderedDict is enough here, and no library the collector depends on
offers one: cachetools would be a new dependency for twenty lines.)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


class LruDict(OrderedDict):
    """An OrderedDict that forgets its least recently used entries past ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def use(self, key: Any, make: Callable[[], Any]) -> Any:
        """The value at ``key`` (made if absent), marked most recently used."""
        try:
            self.move_to_end(key)
            return self[key]
        except KeyError:
            value = make()
            self.put(key, value)
            return value

    def put(self, key: Any, value: Any) -> None:
        """Set ``key`` as the most recently used, forgetting the oldest past the bound."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.max_entries:
            self.popitem(last=False)
