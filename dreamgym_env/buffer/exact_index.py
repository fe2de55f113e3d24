"""Exact nearest-neighbour search over a partition's entries, held in memory.

An :class:`ExactIndex` keeps the unit embeddings of a partition's entries as one contiguous
float32 matrix, so a batch of queries costs one matrix product. It grows in place when the
buffer adds entries to the partition, instead of reading the partition again.
:class:`ExactIndexCache` holds one index per (partition, filter) and knows when each is stale.

Results are those of a brute-force search: cosine distance to every matching entry, rounded to
1e-6 (float noise between identical keys must not reorder them), ties broken by id.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

__all__ = ["ExactIndex", "ExactIndexCache", "unit_rows"]

# Similarities below the k-th largest by more than this cannot round to its distance (rounding
# moves a distance by at most 5e-7, float32 arithmetic near 1 by about 1.2e-7).
_TIE_MARGIN = 2e-6
_MIN_CAPACITY = 1024


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (float32) with every row scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class ExactIndex:
    """The entries of one partition (optionally filtered) for exact search.

    Args:
        domain: The partition's domain; entry ids are ``"{domain}:{trajectory_id}:{step}"``, so
            the trajectory of an entry is read from its id.
        dim: Embedding size.
        count: The partition's entry count this index reflects (see :class:`ExactIndexCache`).
    """

    def __init__(self, domain: str, dim: int, count: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.domain = domain
        self.dim = int(dim)
        self.count = int(count)
        self.ids: list[str] = []
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        self._rows_of_trajectory: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def matrix(self) -> np.ndarray:
        """The unit embeddings, one row per entry of :attr:`ids` (a view, not a copy)."""
        return self._matrix[: len(self.ids)]

    def append(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Add entries (their raw embeddings; rows are normalised here).

        Raises:
            ValueError: When ``embeddings`` is not ``(len(ids), dim)``.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape != (len(ids), self.dim):
            raise ValueError(
                f"expected embeddings of shape ({len(ids)}, {self.dim}), got {embeddings.shape}"
            )
        if not len(ids):
            return
        start, stop = len(self.ids), len(self.ids) + len(ids)
        if stop > len(self._matrix):  # grow geometrically: appends cost O(1) amortised
            grown = np.zeros((max(stop, 2 * len(self._matrix), _MIN_CAPACITY), self.dim), dtype=np.float32)
            grown[:start] = self._matrix[:start]
            self._matrix = grown
        self._matrix[start:stop] = unit_rows(embeddings)
        prefix = len(self.domain) + 1
        for row, id_ in enumerate(ids, start):
            self._rows_of_trajectory.setdefault(id_[prefix : id_.rindex(":")], []).append(row)
        self.ids.extend(ids)

    def search(
        self, queries: np.ndarray, n_results: int, exclude: Sequence[str | None]
    ) -> list[list[tuple[float, str]]]:
        """The ``n_results`` nearest entries to each query, as (distance, id), nearest first.

        Args:
            queries: Unit query embeddings, ``(b, dim)`` float32 (see :func:`unit_rows`).
            n_results: Neighbours per query.
            exclude: Per query, a trajectory id whose entries are skipped, or None.
        """
        n = len(self.ids)
        if n == 0 or n_results <= 0:
            return [[] for _ in range(len(queries))]
        similarity = queries @ self.matrix.T
        for j, trajectory in enumerate(exclude):
            rows = self._rows_of_trajectory.get(trajectory) if trajectory is not None else None
            if rows:
                similarity[j, rows] = -np.inf
        k = min(n_results, n)
        kth = np.partition(similarity, n - k, axis=1)[:, n - k]  # k-th largest per query
        out = []
        for j in range(len(queries)):
            row = similarity[j]
            cand = np.flatnonzero(row >= kth[j] - _TIE_MARGIN)
            cand = cand[np.isfinite(row[cand])]
            # The candidates' distances again, in float64 from the stored rows: the float32
            # product's last bit depends on the batch's size and the row's place in BLAS's
            # blocks, which would break ties between equal entries differently per batch.
            exact = self.matrix[cand].astype(np.float64) @ queries[j].astype(np.float64)
            dist = np.round(1.0 - exact, 6)
            ranked = sorted(zip(dist.tolist(), (self.ids[i] for i in cand)))
            out.append([(max(0.0, d), id_) for d, id_ in ranked[:k]])
        return out


class ExactIndexCache:
    """One :class:`ExactIndex` per (partition, filter), kept in step with the buffer.

    The buffer reports its own writes (:meth:`added`, :meth:`changed`), so an unfiltered index
    grows in place and a filtered one is rebuilt on next use. Writes by other processes are
    noticed by comparing the partition's entry count with the index's, at most every
    ``recheck_s`` seconds per partition (a Chroma ``count`` costs milliseconds, growing with
    the partition); a mismatch rebuilds the index.

    Args:
        pages: ``pages(col, where, include)`` yields ``col.get`` answers page by page.
        recheck_s: Seconds between two count checks of one partition.
    """

    def __init__(self, pages: Callable[[Any, Any, list[str]], Iterator[dict[str, Any]]], recheck_s: float = 2.0) -> None:
        self._pages = pages
        self.recheck_s = float(recheck_s)
        self._indexes: dict[tuple[str, str], ExactIndex] = {}
        self._counts: dict[str, tuple[int, float]] = {}  # collection name -> (count, checked at)

    def entry_count(self, col: Any) -> int:
        """``col``'s entry count: Chroma's answer, re-asked at most every ``recheck_s`` seconds
        and kept up to date with this buffer's own writes in between."""
        cached = self._counts.get(col.name)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.recheck_s:
            return cached[0]
        count = int(col.count())
        self._counts[col.name] = (count, now)
        return count

    def get(self, domain: str, col: Any, where: Any) -> ExactIndex:
        """The index of ``col``'s entries matching ``where`` (built on first use or when stale)."""
        key = (col.name, json.dumps(where, sort_keys=True))
        count = self.entry_count(col)
        index = self._indexes.get(key)
        if index is None or index.count != count:
            index = self._indexes[key] = self._build(domain, col, where, count)
        return index

    def _build(self, domain: str, col: Any, where: Any, count: int) -> ExactIndex:
        index: ExactIndex | None = None
        for res in self._pages(col, where, ["embeddings"]):
            if not res["ids"]:
                continue
            embeddings = np.asarray(res["embeddings"], dtype=np.float32)
            if index is None:
                index = ExactIndex(domain, embeddings.shape[1], count)
            index.append(res["ids"], embeddings)
        return index if index is not None else ExactIndex(domain, 1, count)

    def added(self, col: Any, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """The buffer stored ``ids`` in ``col``: unfiltered indexes grow, filtered ones go."""
        dim = np.shape(embeddings)[1]
        if col.name in self._counts:
            count, checked = self._counts[col.name]
            self._counts[col.name] = (count + len(ids), checked)
        for key in self._keys(col):
            index = self._indexes[key]
            if key[1] != "null":  # a filter the new entries may or may not match
                self._drop(key)
                continue
            if index.dim != dim:
                if len(index):
                    raise ValueError(f"embeddings of size {dim} added to an index of size {index.dim}")
                index = self._indexes[key] = ExactIndex(index.domain, dim, index.count)
            index.append(ids, embeddings)
            index.count += len(ids)

    def changed(self, col: Any, *, filtered_only: bool = False) -> None:
        """The buffer deleted or updated entries of ``col``: drop its indexes (only the
        filtered ones when ``filtered_only``, for a metadata update)."""
        if not filtered_only:
            self._counts.pop(col.name, None)
        for key in self._keys(col):
            if not filtered_only or key[1] != "null":
                self._drop(key)

    def clear(self) -> None:
        """Forget every index (when the buffer is closed)."""
        self._indexes.clear()
        self._counts.clear()

    def _keys(self, col: Any) -> Iterable[tuple[str, str]]:
        return [k for k in self._indexes if k[0] == col.name]

    def _drop(self, key: tuple[str, str]) -> None:
        self._indexes.pop(key, None)
