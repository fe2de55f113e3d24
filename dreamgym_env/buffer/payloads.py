"""A bounded cache of stored transitions by id.

Stored transitions never change under their id (a re-add is a duplicate), so their payloads can
be cached: a query then asks Chroma for ids and distances only, which halves its cost, and
fetches the payloads it has not seen yet.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Sequence

from dreamgym_env.buffer.entries import entry_transition
from dreamgym_env.buffer.partitions import chunks
from dreamgym_env.schema import Transition

__all__ = ["PayloadCache"]


class PayloadCache:
    """Least-recently-used transitions by id, with hit and miss counts.

    Args:
        max_size: Transitions kept at most.
    """

    def __init__(self, max_size: int = 50_000) -> None:
        self.max_size = int(max_size)
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, Transition] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def load(self, col: Any, ids: Sequence[str], batch_size: int) -> dict[str, Transition]:
        """The transitions of ``ids`` (all stored in ``col``), from the cache or ``col.get``
        calls of at most ``batch_size`` ids."""
        cache = self._items
        missing = list(dict.fromkeys(i for i in ids if i not in cache))
        self.misses += len(missing)
        self.hits += len(ids) - len(missing)
        for chunk in chunks(missing, batch_size):
            res = col.get(ids=chunk, include=["metadatas"])
            for id_, meta in zip(res["ids"], res["metadatas"]):
                cache[id_] = entry_transition(meta)
        out = {}
        for id_ in ids:
            cache.move_to_end(id_)
            out[id_] = cache[id_]
        while len(cache) > self.max_size:
            cache.popitem(last=False)
        return out

    def discard(self, ids: Iterable[str]) -> None:
        """Forget ``ids`` (deleted entries)."""
        for id_ in ids:
            self._items.pop(id_, None)
