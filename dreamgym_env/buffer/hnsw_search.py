"""Approximate nearest-neighbour search with Chroma's HNSW index, trajectory exclusion included.

Chroma's HNSW search is approximate, and which of several equally distant entries it returns
depends on how its graph was built; see :mod:`dreamgym_env.buffer.exact_index` for the exact,
reproducible search.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from dreamgym_env.buffer.partitions import PartKey, Where, and_where
from dreamgym_env.schema import Transition

__all__ = ["search_hnsw"]

Hit = tuple[str, float, Transition]  # (id, distance, transition)
LoadPayloads = Callable[[Any, Sequence[str]], dict[str, Transition]]


def search_hnsw(
    parts: list[tuple[PartKey, Any]],
    emb: np.ndarray,
    n_results: int,
    where: Where | None,
    exclude: list[str | None],
    load_payloads: LoadPayloads,
) -> list[list[Hit]]:
    """The ``n_results`` nearest entries of ``parts`` per embedding, by Chroma's HNSW index.

    Entries of ``exclude[i]`` are dropped from result ``i``; only rows where they displaced a
    neighbour are asked again (with more results, then with a ``$ne`` filter).

    Args:
        parts: The partitions to search, as (key, collection).
        emb: Query embeddings, ``(b, dim)``.
        n_results: Neighbours per query.
        where: Residual Chroma filter, or None.
        exclude: Per query, a trajectory id to skip, or None.
        load_payloads: ``load_payloads(col, ids)`` -> the transitions of ``ids``.
    """
    rows = _search(parts, emb, n_results, n_results, where, exclude, load_payloads)
    # Rows where their own trajectory took places: ask again for more, then let Chroma
    # filter (slow, but only when the trajectory crowds the whole neighbourhood).
    short = [i for i in range(len(emb)) if rows[i][1]]
    if short:
        again = _search(parts, emb[short], 4 * n_results, n_results, where, [exclude[i] for i in short], load_payloads)
        for j, i in enumerate(short):
            rows[i] = again[j]
        for i in [i for i in short if rows[i][1]]:
            ne = and_where(where, {"trajectory_id": {"$ne": exclude[i]}})
            rows[i] = _search(parts, emb[i : i + 1], n_results, n_results, ne, [None], load_payloads)[0]
    return [hits for hits, _ in rows]


def _search(
    parts: list[tuple[PartKey, Any]],
    emb: np.ndarray,
    fetch: int,
    limit: int,
    where: Where | None,
    exclude: list[str | None],
    load_payloads: LoadPayloads,
) -> list[tuple[list[Hit], bool]]:
    """Nearest ``limit`` per embedding over ``parts``, fetching ``fetch`` per partition.

    Returns per row (hits, maybe_incomplete): ``maybe_incomplete`` is True when excluded
    entries took places in a full partition answer, so that unseen candidates of that
    partition could still belong in the top ``limit``.
    """
    merged: list[list[tuple[float, str, Transition]]] = [[] for _ in range(len(emb))]
    horizon = [math.inf] * len(emb)  # distance beyond which a partition's answer is unknown
    for _, col in parts:
        res = col.query(query_embeddings=emb, n_results=fetch, where=where, include=["distances"])
        payloads = load_payloads(col, [id_ for ids in res["ids"] for id_ in ids])
        for j, (ids, dists) in enumerate(zip(res["ids"], res["distances"])):
            ex = exclude[j]
            dropped = False
            for id_, dist in zip(ids, dists):
                if ex is not None and payloads[id_].trajectory_id == ex:
                    dropped = True
                else:
                    merged[j].append((max(0.0, float(dist)), id_, payloads[id_]))
            if dropped and len(ids) == fetch:
                horizon[j] = min(horizon[j], max(0.0, float(dists[-1])))
    out = []
    for j, cands in enumerate(merged):
        if len(parts) > 1:
            cands.sort(key=lambda c: (c[0], c[1]))
        top = cands[:limit]
        incomplete = horizon[j] < math.inf and (len(top) < limit or top[-1][0] > horizon[j])
        out.append(([(id_, d, t) for d, id_, t in top], incomplete))
    return out
