"""Which entries to delete when a buffer is pruned (by count, age or utility)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

from dreamgym_env.buffer.partitions import Where, and_where

__all__ = ["prune_entries"]

Row = tuple[Any, str]  # (collection, id)
Scan = Callable[[Where | None, list[str]], Iterable[tuple[Any, str, dict[str, Any] | None]]]


def prune_entries(
    scan: Scan,
    delete: Callable[[Sequence[Row]], int],
    *,
    max_count: int | None = None,
    older_than_s: float | None = None,
    min_utility: float | None = None,
    where: Where | None = None,
) -> int:
    """Delete entries; each given criterion applies in turn, all within ``where``.

    Args:
        scan: ``scan(where, include)`` yields (collection, id, metadata) of matching entries.
        delete: ``delete(rows)`` deletes (collection, id) rows and returns how many.
        max_count: Keep at most this many entries (the newest by ``created_at``, ties by id).
        older_than_s: Delete entries created more than this many seconds ago.
        min_utility: Delete entries whose ``utility`` is below this value.
        where: Restrict pruning to entries matching this Chroma filter.

    Returns:
        How many entries were deleted.

    Raises:
        ValueError: For a negative ``max_count``.
    """
    if max_count is not None and max_count < 0:
        raise ValueError(f"max_count must be >= 0, got {max_count}")
    deleted = 0
    if older_than_s is not None:
        cutoff = time.time() - float(older_than_s)
        old = and_where(where, {"created_at": {"$lt": cutoff}})
        deleted += delete([(c, i) for c, i, _ in scan(old, [])])
    if min_utility is not None:
        low = and_where(where, {"utility": {"$lt": float(min_utility)}})
        deleted += delete([(c, i) for c, i, _ in scan(low, [])])
    if max_count is not None:
        rows = [(m["created_at"], i, c) for c, i, m in scan(where, ["metadatas"])]  # type: ignore[index]
        if len(rows) > max_count:
            rows.sort(key=lambda r: (r[0], r[1]))
            deleted += delete([(c, i) for _, i, c in rows[: len(rows) - max_count]])
    return deleted
