"""A buffer's Chroma collections: one per (domain, source) partition, and filter routing.

A buffer named ``collection`` is a family of Chroma collections, one per (domain, source)
partition, named ``"{collection}.{domain}.{source}"`` and tagged with collection metadata.
Chroma evaluates a ``where`` filter by scanning every matching row (about 30 ms for 5k matches,
growing with the buffer), so conditions on ``domain`` and ``source`` are answered by choosing
partitions instead (:func:`route`); only the rest of a filter reaches Chroma. The env's
retrieval (``domain`` and ``source`` equal to given values) is thus one unfiltered query.
"""

from __future__ import annotations

import json
import math
import re
import time
import zlib
from typing import Any, Iterator, Sequence

from dreamgym_env.buffer.embedders import get_embedder
from dreamgym_env.buffer.entries import SOURCES
from dreamgym_env.errors import ReplayBufferError
from dreamgym_env.schema import SCHEMA_VERSION

__all__ = ["PartKey", "Partitions", "Where", "and_where", "chunks", "pages", "partition_name", "route"]

Where = dict[str, Any]
PartKey = tuple[str, str]  # (domain, source)

_NAME_OK = re.compile(r"[A-Za-z0-9_-]+")
# Embedder settings that do not change the vectors (a buffer built on a GPU opens on a CPU).
_RUNTIME_KEYS = {"device", "batch_size"}
_MISSING_TTL_S = 2.0  # how long "this partition does not exist" is believed


# -- filters -----------------------------------------------------------------------------------


def and_where(*clauses: Where | None) -> Where | None:
    """The conjunction of the given filters (None ones skipped; None when none is left)."""
    parts = [c for c in clauses if c]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _conjuncts(where: Where | None) -> list[Where]:
    """Top-level conjuncts of a where clause (``$and`` flattened, multi-key dicts split)."""
    if not where:
        return []
    if len(where) > 1:
        return [c for k, v in where.items() for c in _conjuncts({k: v})]
    if "$and" in where:
        return [c for sub in where["$and"] for c in _conjuncts(sub)]
    return [where]


def _equal_values(cond: Any) -> set[Any] | None:
    """Values a condition on one key accepts when it is an equality or ``$in``, else None."""
    if not isinstance(cond, dict):
        return {cond}
    if len(cond) == 1:
        (op, value), = cond.items()
        if op == "$eq":
            return {value}
        if op == "$in" and isinstance(value, list):
            return set(value)
    return None


def _excluded_values(cond: Any) -> set[Any] | None:
    if isinstance(cond, dict) and len(cond) == 1:
        (op, value), = cond.items()
        if op == "$ne":
            return {value}
        if op == "$nin" and isinstance(value, list):
            return set(value)
    return None


def route(where: Where | None) -> tuple[set[str] | None, set[str], Where | None]:
    """Split a filter into partition choices and the rest.

    Returns:
        (domains or None for all, sources, the residual filter for Chroma or None).
    """
    domains: set[str] | None = None
    sources = set(SOURCES)
    rest: list[Where] = []
    for clause in _conjuncts(where):
        if len(clause) == 1:
            (key, cond), = clause.items()
            if key in ("domain", "source"):
                values = _equal_values(cond)
                if values is not None:
                    if key == "domain":
                        domains = values if domains is None else domains & values
                    else:
                        sources &= values
                    continue
                excluded = _excluded_values(cond)
                if key == "source" and excluded is not None:
                    sources -= excluded
                    continue
        rest.append(clause)
    return domains, sources, and_where(*rest)


def partition_name(collection: str, domain: str, source: str) -> str:
    """The Chroma collection name of a buffer's (domain, source) partition."""
    safe = domain if _NAME_OK.fullmatch(domain) else (
        re.sub(r"[^A-Za-z0-9_-]", "_", domain)[:40] + f"-{zlib.crc32(domain.encode()):08x}"
    )
    return f"{collection}.{safe}.{source}"


# -- paging ------------------------------------------------------------------------------------


def chunks(seq: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """``seq`` in consecutive lists of at most ``size`` items."""
    for start in range(0, len(seq), size):
        yield list(seq[start : start + size])


def pages(col: Any, where: Where | None, include: list[str], size: int) -> Iterator[dict[str, Any]]:
    """``col.get`` answers for the entries matching ``where``, ``size`` at a time."""
    offset = 0
    while True:
        res = col.get(where=where, include=include, limit=size, offset=offset)
        yield res
        if len(res["ids"]) < size:
            return
        offset += len(res["ids"])


# -- embedders ---------------------------------------------------------------------------------


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    return {k: v for k, v in a.items() if k not in _RUNTIME_KEYS} == {
        k: v for k, v in b.items() if k not in _RUNTIME_KEYS
    }


def resolve_embedder(embedder: Any, existing: Sequence[Any]) -> Any:
    """``embedder`` as an embedding function; ``None`` reuses the one ``existing`` partitions
    were created with (the hashing embedder when there are none)."""
    if embedder is not None:
        return get_embedder(embedder)
    from chromadb.utils.embedding_functions import config_to_embedding_function

    for col in existing:
        stored = (col.configuration_json or {}).get("embedding_function")
        if stored and stored.get("type") == "known":
            return config_to_embedding_function(stored)
    return get_embedder("hashing")


# -- the partitions of one buffer --------------------------------------------------------------


class Partitions:
    """The Chroma collections of the buffer named ``collection``, opened on demand and cached.

    Args:
        client: The Chroma client.
        collection: The buffer's name.

    Set :attr:`embedder` before creating partitions; every partition opened is checked to
    have been created with the same embedder.
    """

    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self.collection = collection
        self.embedder: Any = None
        self._open: dict[PartKey, Any] = {}
        self._missing: dict[PartKey, float] = {}  # partitions found absent, and when

    def check_embedder(self, col: Any) -> None:
        """Raise when ``col`` was created with an embedder other than :attr:`embedder`.

        Raises:
            ReplayBufferError: Naming both embedders and what to pass instead.
        """
        stored = (col.configuration_json or {}).get("embedding_function") or {}
        ef = self.embedder
        if stored.get("name") not in (None, ef.name()) or (
            stored.get("config") is not None and not _same_config(stored["config"], ef.get_config())
        ):
            raise ReplayBufferError(
                f"Buffer {self.collection!r} ({col.name}) was created with embedder "
                f"{stored.get('name')} {stored.get('config')}, not {ef.name()} {ef.get_config()}. "
                "Pass embedder=None to reuse the stored one, or use another collection name."
            )

    def all(self, *, check: bool = True) -> dict[PartKey, Any]:
        """Every partition of this buffer that exists now (refreshes the cache)."""
        found: dict[PartKey, Any] = {}
        for col in self.client.list_collections():
            meta = col.metadata or {}
            if meta.get("dreamgym_buffer") == self.collection:
                key = (meta["dreamgym_domain"], meta["dreamgym_source"])
                if key in self._open:
                    col = self._open[key]
                elif check:
                    self.check_embedder(col)
                found[key] = col
                self._missing.pop(key, None)
        self._open.update(found)
        return found

    def get(self, domain: str, source: str, *, create: bool = False) -> Any:
        """The Chroma collection of (domain, source); None when it does not exist (and not create)."""
        key = (domain, source)
        col = self._open.get(key)
        if col is not None:
            return col
        if not create and time.monotonic() - self._missing.get(key, -math.inf) < _MISSING_TTL_S:
            return None
        from chromadb.errors import NotFoundError

        name = partition_name(self.collection, domain, source)
        if create:
            col = self.client.get_or_create_collection(
                name,
                embedding_function=self.embedder,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={
                    "dreamgym_buffer": self.collection,
                    "dreamgym_domain": domain,
                    "dreamgym_source": source,
                    "dreamgym_schema_version": SCHEMA_VERSION,
                },
            )
        else:
            try:
                col = self.client.get_collection(name)
            except (NotFoundError, ValueError):
                self._missing[key] = time.monotonic()
                return None
        self.check_embedder(col)
        self._open[key] = col
        self._missing.pop(key, None)
        return col

    def matching(self, where: Where | None) -> tuple[list[tuple[PartKey, Any]], Where | None]:
        """The existing partitions a filter can match, and the residual filter for Chroma."""
        domains, sources, residual = route(where)
        if domains is None:
            chosen = [(k, c) for k, c in sorted(self.all().items()) if k[1] in sources]
        else:
            chosen = []
            for d in sorted(d for d in domains if isinstance(d, str)):
                for s in sorted(sources):
                    col = self.get(d, s)
                    if col is not None:
                        chosen.append(((d, s), col))
        return chosen, residual

    def of_domain(self, domain: str) -> list[Any]:
        """The existing partitions of ``domain`` (one per source)."""
        return [c for c in (self.get(domain, s) for s in SOURCES) if c is not None]

    def forget(self) -> None:
        """Drop the cached collections (when the client is closed)."""
        self._open = {}
        self._missing = {}
