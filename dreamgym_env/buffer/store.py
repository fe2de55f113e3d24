"""The replay buffer: transitions in Chroma, retrieved by (state, action) similarity.

Every entry is one :class:`~dreamgym_env.schema.Transition`:

- id: :func:`transition_id` (``"{domain}:{trajectory_id}:{step}"``), unique in the buffer, so
  the same step is never stored twice;
- document: :func:`key_text` of its state and action, the text that is embedded and the same
  text a query is built from;
- metadata: provenance and filter fields (``source``, ``domain``, ``task_id``,
  ``trajectory_id``, ``step``, ``reward``, ``done``, ``valid_action``, ``policy_version``,
  ``created_at``, ``utility``, and ``initial_task_id`` on first steps only) plus ``payload``,
  the transition's JSON, from which :meth:`ExperienceBuffer.get` and
  :meth:`ExperienceBuffer.query` rebuild it exactly.

Layout: a buffer named ``collection`` is a family of Chroma collections, one per (domain,
source) partition, named ``"{collection}.{domain}.{source}"`` and tagged with collection
metadata. Chroma evaluates a ``where`` filter by scanning every matching row (about 30 ms for
5k matches, growing with the buffer), so conditions on ``domain`` and ``source`` are answered
by choosing partitions instead; only the rest of a filter reaches Chroma. The env's retrieval
(``domain`` and ``source`` equal to given values) is thus one unfiltered HNSW query.

Embeddings are computed here (not by Chroma) and passed explicitly, so a batch of (state,
action) pairs costs one embedding pass and one Chroma call per partition queried.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import os
import re
import time
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np

from dreamgym_env.buffer.embedders import get_embedder
from dreamgym_env.errors import ReplayBufferError
from dreamgym_env.schema import SCHEMA_VERSION, Trajectory, Transition

logger = logging.getLogger(__name__)

__all__ = ["AddResult", "ExperienceBuffer", "Retrieved", "key_text", "transition_id"]

SOURCES = ("real", "synthetic")
DEFAULT_COLLECTION = "dreamgym"
Where = dict[str, Any]
PartKey = tuple[str, str]  # (domain, source)

_NAME_OK = re.compile(r"[A-Za-z0-9_-]+")


def transition_id(t: Transition) -> str:
    """The buffer id of a transition: ``"{domain}:{trajectory_id}:{step}"`` (deterministic)."""
    return f"{t.domain}:{t.trajectory_id}:{int(t.step)}"


def open_text(path: str | os.PathLike[str], mode: str = "rt") -> Any:
    """Open a UTF-8 text file, through gzip when its name ends in ``.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def key_text(state: str, action: str) -> str:
    """The retrieval key of a (state, action) pair: what is stored as document and queried."""
    return f"{action}\n{state}"


@dataclass
class AddResult:
    """Outcome of an insert: ids stored now, and ids skipped because they already existed."""

    added: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


@dataclass
class _ExactIndex:
    """A partition's entries for exact search: ids in sorted order, their unit embeddings and
    trajectory ids, and the entry count they were read at."""

    count: int
    ids: list[str]
    matrix: np.ndarray
    trajectory_ids: np.ndarray


@dataclass
class Retrieved:
    """One retrieved neighbour: its id, cosine distance to the query key and the transition."""

    id: str
    distance: float
    transition: Transition


# -- helpers -----------------------------------------------------------------------------------


def _and(*clauses: Where | None) -> Where | None:
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


def _route(where: Where | None) -> tuple[set[str] | None, set[str], Where | None]:
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
    return domains, sources, _and(*rest)


def _partition_name(collection: str, domain: str, source: str) -> str:
    safe = domain if _NAME_OK.fullmatch(domain) else (
        re.sub(r"[^A-Za-z0-9_-]", "_", domain)[:40] + f"-{zlib.crc32(domain.encode()):08x}"
    )
    return f"{collection}.{safe}.{source}"


def _metadata(t: Transition) -> dict[str, Any]:
    if t.source not in SOURCES:
        raise ReplayBufferError(
            f"Transition {transition_id(t)!r} has source {t.source!r}; expected one of {SOURCES}."
        )
    meta = {
        "source": t.source,
        "domain": t.domain,
        "task_id": str(t.task_id),
        "trajectory_id": str(t.trajectory_id),
        "step": int(t.step),
        "reward": float(t.reward),
        "done": bool(t.done),
        "valid_action": bool(t.valid_action),
        "policy_version": t.policy_version or "",
        "created_at": float(t.created_at),
        "utility": 0.0,
        "schema_version": SCHEMA_VERSION,
        "payload": json.dumps(t.to_dict(), ensure_ascii=False),
    }
    if int(t.step) == 0:
        # One selective key for initial_states: Chroma's filter cost grows with the rows each
        # condition matches, so {"task_id": x} AND {"step": 0} would scan every first step.
        meta["initial_task_id"] = str(t.task_id)
    return meta


def _transition(meta: dict[str, Any]) -> Transition:
    return Transition.from_dict(json.loads(meta["payload"]))


def _chunks(seq: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(seq), size):
        yield list(seq[start : start + size])


def _start_hint(host: str, port: int) -> str:
    return f"chroma run --path ./chroma --host {host} --port {port}"


# Embedder settings that do not change the vectors (a buffer built on a GPU opens on a CPU).
_RUNTIME_KEYS = {"device", "batch_size"}
_MISSING_TTL_S = 2.0  # how long "this partition does not exist" is believed


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    return {k: v for k, v in a.items() if k not in _RUNTIME_KEYS} == {
        k: v for k, v in b.items() if k not in _RUNTIME_KEYS
    }


class ExperienceBuffer:
    """A Chroma-backed replay buffer of transitions with provenance.

    Args:
        path: Directory of a local persistent store (``chromadb.PersistentClient``).
        host: Host of a Chroma server (``chromadb.HttpClient``); ``port`` defaults to 8000.
        port: Port of the Chroma server.
        client: An existing Chroma client, used as is (and not closed by :meth:`close`).
        collection: Buffer name, the prefix of its Chroma collections (one per domain and
            source: ``"{collection}.{domain}.{source}"``).
        embedder: ``"hashing"`` (default, offline), ``"minilm"``, a Chroma embedding function,
            or ``None`` to reuse the one the buffer was created with.

    With none of ``path``, ``host`` or ``client`` the buffer lives in memory, isolated from other
    in-memory buffers of the process (its own Chroma database, dropped by :meth:`close`).
    Entries written by other processes are seen at once; a (domain, source) partition that
    another process creates becomes visible within 2 s.

    Raises:
        ReplayBufferError: When the server cannot be reached, or the buffer was created with a
            different embedder.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        client: Any = None,
        collection: str = DEFAULT_COLLECTION,
        embedder: Any = "hashing",
    ) -> None:
        if sum(x is not None for x in (path, host, client)) > 1:
            raise ValueError("Pass at most one of path, host/port or client.")
        if port is not None and host is None:
            host = "localhost"
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,398}[A-Za-z0-9])?", collection) or ".." in collection:
            raise ValueError(
                f"Invalid buffer collection name {collection!r}: use up to 400 characters from "
                "[a-zA-Z0-9._-], starting and ending with a letter or digit."
            )
        import chromadb

        self._owns_client = client is None
        self._ephemeral_db: str | None = None
        self._admin: Any = None
        self.url: str | None = None
        self.path = None if path is None else str(path)
        self.collection_name = collection
        self._parts: dict[PartKey, Any] = {}
        # Stored transitions never change under their id (a re-add is a duplicate), so their
        # payloads can be cached: a query then asks Chroma for ids and distances only, which
        # halves its cost, and fetches the payloads it has not seen yet.
        self._payloads: OrderedDict[str, Transition] = OrderedDict()
        self.payload_cache_size = 50_000
        self.payload_hits = 0
        self.payload_misses = 0
        self._missing: dict[PartKey, float] = {}  # partitions found absent, and when
        self._exact: dict[tuple[str, str], _ExactIndex] = {}  # see _exact_index
        if client is not None:
            self._client = client
        elif host is not None:
            port = int(port or 8000)
            self.url = f"http://{host}:{port}"
            try:
                self._client = chromadb.HttpClient(host=host, port=port)
            except Exception as exc:  # chromadb raises ValueError, httpx errors, ...
                raise ReplayBufferError(
                    f"Cannot reach a Chroma server at {self.url} ({exc}). Start one with: "
                    f"{_start_hint(host, port)}"
                ) from exc
        elif path is not None:
            Path(path).mkdir(parents=True, exist_ok=True)
            self._client = chromadb.PersistentClient(path=str(path))
        else:
            base = chromadb.EphemeralClient()
            self._admin = chromadb.AdminClient(base.get_settings())
            self._ephemeral_db = f"dreamgym-{uuid.uuid4().hex}"
            self._admin.create_database(self._ephemeral_db)
            self._client = chromadb.EphemeralClient(database=self._ephemeral_db)
            base.close()  # the admin client keeps the shared in-memory system alive
        try:
            with self._errors():
                self.max_batch_size = int(self._client.get_max_batch_size())
                existing = self._list_partitions(check=False)
                self.embedder = self._resolve_embedder(embedder, existing)
                for col in existing.values():
                    self._check_embedder(col)
        except BaseException:
            self.embedder = None
            self.close()
            raise
        self._embed = getattr(self.embedder, "embed", None) or (
            lambda texts: np.asarray(self.embedder(list(texts)), dtype=np.float32)
        )

    @classmethod
    def from_uri(cls, uri: str | os.PathLike[str], **kw: Any) -> "ExperienceBuffer":
        """Open a buffer from ``http://host:port`` (a server), ``:memory:`` or a path."""
        text = str(uri)
        if text.startswith(("http://", "https://")):
            parsed = urlparse(text)
            if parsed.scheme == "https":
                raise ReplayBufferError(f"{text}: for an https Chroma server pass client=chromadb.HttpClient(..., ssl=True)")
            return cls(host=parsed.hostname or "localhost", port=parsed.port or 8000, **kw)
        if text == ":memory:":
            return cls(**kw)
        return cls(path=text, **kw)

    # -- partitions -----------------------------------------------------------------------------

    def _resolve_embedder(self, embedder: Any, existing: dict[PartKey, Any]) -> Any:
        if embedder is not None:
            return get_embedder(embedder)
        from chromadb.utils.embedding_functions import config_to_embedding_function

        for col in existing.values():
            stored = (col.configuration_json or {}).get("embedding_function")
            if stored and stored.get("type") == "known":
                return config_to_embedding_function(stored)
        return get_embedder("hashing")

    def _check_embedder(self, col: Any) -> None:
        stored = (col.configuration_json or {}).get("embedding_function") or {}
        ef = self.embedder
        if stored.get("name") not in (None, ef.name()) or (
            stored.get("config") is not None and not _same_config(stored["config"], ef.get_config())
        ):
            raise ReplayBufferError(
                f"Buffer {self.collection_name!r} ({col.name}) was created with embedder "
                f"{stored.get('name')} {stored.get('config')}, not {ef.name()} {ef.get_config()}. "
                "Pass embedder=None to reuse the stored one, or use another collection name."
            )

    def _list_partitions(self, *, check: bool = True) -> dict[PartKey, Any]:
        """Every partition of this buffer that exists now (refreshes the cache)."""
        found: dict[PartKey, Any] = {}
        for col in self._client.list_collections():
            meta = col.metadata or {}
            if meta.get("dreamgym_buffer") == self.collection_name:
                key = (meta["dreamgym_domain"], meta["dreamgym_source"])
                if key in self._parts:
                    col = self._parts[key]
                elif check:
                    self._check_embedder(col)
                found[key] = col
                self._missing.pop(key, None)
        self._parts.update(found)
        return found

    def _partition(self, domain: str, source: str, *, create: bool = False) -> Any:
        """The Chroma collection of (domain, source); None when it does not exist (and not create)."""
        key = (domain, source)
        col = self._parts.get(key)
        if col is not None:
            return col
        if not create and time.monotonic() - self._missing.get(key, -math.inf) < _MISSING_TTL_S:
            return None
        from chromadb.errors import NotFoundError

        name = _partition_name(self.collection_name, domain, source)
        if create:
            col = self._client.get_or_create_collection(
                name,
                embedding_function=self.embedder,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={
                    "dreamgym_buffer": self.collection_name,
                    "dreamgym_domain": domain,
                    "dreamgym_source": source,
                    "dreamgym_schema_version": SCHEMA_VERSION,
                },
            )
        else:
            try:
                col = self._client.get_collection(name)
            except (NotFoundError, ValueError):
                self._missing[key] = time.monotonic()
                return None
        self._check_embedder(col)
        self._parts[key] = col
        self._missing.pop(key, None)
        return col

    def _partitions(self, where: Where | None) -> tuple[list[tuple[PartKey, Any]], Where | None]:
        """The existing partitions a filter can match, and the residual filter for Chroma."""
        domains, sources, residual = _route(where)
        if domains is None:
            parts = self._list_partitions()
            chosen = [(k, c) for k, c in sorted(parts.items()) if k[1] in sources]
        else:
            chosen = []
            for d in sorted(d for d in domains if isinstance(d, str)):
                for s in sorted(sources):
                    col = self._partition(d, s)
                    if col is not None:
                        chosen.append(((d, s), col))
        return chosen, residual

    def _domain_partitions(self, domain: str) -> list[Any]:
        return [c for c in (self._partition(domain, s) for s in SOURCES) if c is not None]

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn transport and Chroma errors into ReplayBufferError (server URL and hint)."""
        import httpx
        from chromadb.errors import ChromaError

        try:
            yield
        except httpx.TransportError as exc:
            hint = ""
            if self.url:
                parsed = urlparse(self.url)
                hint = f" Start one with: {_start_hint(parsed.hostname or 'localhost', parsed.port or 8000)}"
            raise ReplayBufferError(f"Lost connection to {self.url or 'the Chroma server'}: {exc}.{hint}") from exc
        except ChromaError as exc:
            raise ReplayBufferError(f"Chroma rejected the operation: {exc}") from exc

    # -- writing --------------------------------------------------------------------------------

    def _existing(self, cols: Iterable[Any], ids: Sequence[str]) -> dict[str, Any]:
        """Which of ``ids`` are stored in ``cols``: id -> collection."""
        found: dict[str, Any] = {}
        for col in cols:
            todo = [i for i in ids if i not in found]
            for chunk in _chunks(todo, self.max_batch_size):
                for id_ in col.get(ids=chunk, include=[])["ids"]:
                    found[id_] = col
        return found

    def add(self, transitions: Sequence[Transition]) -> AddResult:
        """Store transitions; ids that exist already (or repeat within the call) are skipped.

        Args:
            transitions: Transitions with ``source`` ``"real"`` or ``"synthetic"``.

        Returns:
            The ids added and the ids skipped as duplicates (logged as a warning), in input order.

        Raises:
            ReplayBufferError: For an unknown ``source`` or a Chroma failure.
        """
        result = AddResult()
        if not transitions:
            return result
        ids = [transition_id(t) for t in transitions]
        metas = [_metadata(t) for t in transitions]  # validates before anything is written
        with self._errors():
            by_domain: dict[str, list[str]] = {}
            for t, id_ in zip(transitions, ids):
                by_domain.setdefault(t.domain, []).append(id_)
            existing: set[str] = set()
            for domain, dom_ids in by_domain.items():
                existing.update(self._existing(self._domain_partitions(domain), list(dict.fromkeys(dom_ids))))
            seen: set[str] = set()
            groups: dict[PartKey, list[int]] = {}
            for i, (t, id_) in enumerate(zip(transitions, ids)):
                if id_ in existing or id_ in seen:
                    result.duplicates.append(id_)
                else:
                    seen.add(id_)
                    groups.setdefault((t.domain, t.source), []).append(i)
            if result.duplicates:
                more = len(result.duplicates) - 5
                logger.warning(
                    "Skipped %d duplicate transition id(s) (already in buffer %r or repeated): %s%s",
                    len(result.duplicates), self.collection_name, ", ".join(result.duplicates[:5]),
                    f" (+{more} more)" if more > 0 else "",
                )
            added: list[int] = []
            if groups:
                self._exact.clear()
            for (domain, source), idx in groups.items():
                col = self._partition(domain, source, create=True)
                for chunk in _chunks(idx, self.max_batch_size):
                    docs = [key_text(transitions[i].state, transitions[i].action) for i in chunk]
                    col.add(
                        ids=[ids[i] for i in chunk],
                        embeddings=self._embed(docs),
                        documents=docs,
                        metadatas=[metas[i] for i in chunk],
                    )
                    added.extend(chunk)
            result.added = [ids[i] for i in sorted(added)]
        return result

    def add_trajectories(self, trajectories: Sequence[Trajectory]) -> AddResult:
        """Store every transition of every trajectory (see :meth:`add`)."""
        return self.add([t for traj in trajectories for t in traj.transitions])

    def _locate(self, ids: Sequence[str]) -> dict[str, Any]:
        """id -> the collection holding it, for the stored ones among ``ids``."""
        by_domain: dict[str, list[str]] = {}
        for id_ in ids:
            by_domain.setdefault(id_.split(":", 1)[0], []).append(id_)
        found: dict[str, Any] = {}
        for domain, dom_ids in by_domain.items():
            found.update(self._existing(self._domain_partitions(domain), dom_ids))
        missing = [i for i in ids if i not in found]
        if missing:  # a domain with ':' in its name: look everywhere
            found.update(self._existing(self._list_partitions().values(), missing))
        return found

    def set_utility(self, ids: Sequence[str], values: Sequence[float]) -> None:
        """Set the ``utility`` score of stored entries (used by :meth:`prune`).

        Raises:
            ReplayBufferError: When an id is not stored.
            ValueError: On length mismatch or a non-finite value.
        """
        ids = list(ids)
        values = [float(v) for v in values]
        if len(ids) != len(values):
            raise ValueError(f"{len(ids)} ids but {len(values)} values")
        if not all(math.isfinite(v) for v in values):
            raise ValueError("utility values must be finite")
        with self._errors():
            where_is = self._locate(ids)
            missing = [i for i in ids if i not in where_is]
            if missing:
                raise ReplayBufferError(f"{len(missing)} id(s) not in the buffer: {missing[:5]}")
            groups: dict[int, tuple[Any, list[str], list[float]]] = {}
            for id_, v in zip(ids, values):
                col = where_is[id_]
                groups.setdefault(id(col), (col, [], []))[1].append(id_)
                groups[id(col)][2].append(v)
            for col, gids, gvals in groups.values():
                for start in range(0, len(gids), self.max_batch_size):
                    stop = start + self.max_batch_size
                    col.update(ids=gids[start:stop], metadatas=[{"utility": v} for v in gvals[start:stop]])

    # -- reading --------------------------------------------------------------------------------

    def query(
        self,
        states: Sequence[str],
        actions: Sequence[str],
        *,
        n_results: int = 4,
        where: Where | None = None,
        exclude_trajectory_ids: Sequence[str | None] | None = None,
        exact: bool = False,
    ) -> list[list[Retrieved]]:
        """Top-``n_results`` stored transitions nearest to each (state, action) pair.

        All pairs go to Chroma in one call per partition matched by ``where`` (one call for the
        env's ``{"$and": [{"domain": d}, {"source": s}]}``). Entries of
        ``exclude_trajectory_ids[i]`` are dropped from result ``i``; only rows where they
        displaced a neighbour are asked again (with more results, then with a ``$ne`` filter).

        Chroma's HNSW search is approximate, and which of several equally distant entries it
        returns depends on how its graph was built (not reproducible from one build to the
        next: real data holds many identical (state, action) keys). ``exact=True`` instead
        compares each pair with every matching entry and breaks distance ties by id, so two
        buffers holding the same transitions give the same answer; it costs one pass over the
        matching entries per call and suits buffers of up to ~10^5 entries (SFT data building).

        Args:
            states: Current states.
            actions: Actions taken in them (same length).
            n_results: Neighbours per pair.
            where: Chroma metadata filter, e.g. ``{"source": "real"}``.
            exclude_trajectory_ids: Per pair, a trajectory id whose entries must not be returned
                (the querying trajectory), or ``None``.

        Returns:
            One list per pair, nearest first; empty lists when nothing matches.
        """
        n = len(states)
        if len(actions) != n:
            raise ValueError(f"{n} states but {len(actions)} actions")
        if exclude_trajectory_ids is not None and len(exclude_trajectory_ids) != n:
            raise ValueError(f"{n} states but {len(exclude_trajectory_ids)} exclude_trajectory_ids")
        if n == 0:
            return []
        if n_results <= 0:
            return [[] for _ in range(n)]
        exclude = list(exclude_trajectory_ids) if exclude_trajectory_ids is not None else [None] * n
        with self._errors():
            parts, residual = self._partitions(where)
            if not parts:
                return [[] for _ in range(n)]
            emb = self._embed([key_text(s, a) for s, a in zip(states, actions)])
            if exact:
                return [[Retrieved(id_, dist, t) for id_, dist, t in hits]
                        for hits in self._search_exact(parts, emb, n_results, residual, exclude)]
            rows = self._search(parts, emb, n_results, n_results, residual, exclude)
            # Rows where their own trajectory took places: ask again for more, then let Chroma
            # filter (slow, but only when the trajectory crowds the whole neighbourhood).
            short = [i for i in range(n) if rows[i][1]]
            if short:
                again = self._search(
                    parts, emb[short], 4 * n_results, n_results, residual, [exclude[i] for i in short]
                )
                for j, i in enumerate(short):
                    rows[i] = again[j]
                for i in [i for i in short if rows[i][1]]:
                    ne = _and(residual, {"trajectory_id": {"$ne": exclude[i]}})
                    rows[i] = self._search(parts, emb[i : i + 1], n_results, n_results, ne, [None])[0]
        return [[Retrieved(id_, dist, t) for id_, dist, t in r[0]] for r in rows]

    def _load_payloads(self, col: Any, ids: Sequence[str]) -> dict[str, Transition]:
        """The transitions of ``ids`` (all stored in ``col``), from the cache or one ``get``."""
        cache = self._payloads
        missing = list(dict.fromkeys(i for i in ids if i not in cache))
        self.payload_misses += len(missing)
        self.payload_hits += len(ids) - len(missing)
        for chunk in _chunks(missing, self.max_batch_size):
            res = col.get(ids=chunk, include=["metadatas"])
            for id_, meta in zip(res["ids"], res["metadatas"]):
                cache[id_] = _transition(meta)
        out = {}
        for id_ in ids:
            cache.move_to_end(id_)
            out[id_] = cache[id_]
        while len(cache) > self.payload_cache_size:
            cache.popitem(last=False)
        return out

    def _search(
        self,
        parts: list[tuple[PartKey, Any]],
        emb: np.ndarray,
        fetch: int,
        limit: int,
        where: Where | None,
        exclude: list[str | None],
    ) -> list[tuple[list[tuple[str, float, dict[str, Any]]], bool]]:
        """Nearest ``limit`` per embedding over ``parts``, fetching ``fetch`` per partition.

        Returns per row (hits, maybe_incomplete): ``maybe_incomplete`` is True when excluded
        entries took places in a full partition answer, so that unseen candidates of that
        partition could still belong in the top ``limit``.
        """
        merged: list[list[tuple[float, str, dict[str, Any]]]] = [[] for _ in range(len(emb))]
        horizon = [math.inf] * len(emb)  # distance beyond which a partition's answer is unknown
        for _, col in parts:
            res = col.query(query_embeddings=emb, n_results=fetch, where=where, include=["distances"])
            payloads = self._load_payloads(col, [id_ for ids in res["ids"] for id_ in ids])
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
            out.append(([(id_, d, m) for d, id_, m in top], incomplete))
        return out

    def _exact_index(self, key: PartKey, col: Any, where: Where | None) -> "_ExactIndex":
        """Ids (sorted), unit embeddings and trajectory ids of ``col``'s entries matching
        ``where``; cached until the partition's entry count changes. Reads embeddings only (the
        trajectory id is part of the entry id), never the stored payloads."""
        cache_key = (col.name, json.dumps(where, sort_keys=True))
        count = col.count()
        cached = self._exact.get(cache_key)
        if cached is not None and cached.count == count:
            return cached
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        for res in self._pages(col, where, ["embeddings"]):
            ids.extend(res["ids"])
            if res["ids"]:
                vecs.append(np.asarray(res["embeddings"], dtype=np.float32))
        order = sorted(range(len(ids)), key=ids.__getitem__)
        ids = [ids[i] for i in order]
        matrix = np.concatenate(vecs)[order] if ids else np.zeros((0, 0), dtype=np.float32)
        if ids:
            matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        prefix = len(key[0]) + 1  # ids are "{domain}:{trajectory_id}:{step}"
        trajectories = np.asarray([id_[prefix : id_.rindex(":")] for id_ in ids], dtype=object)
        index = _ExactIndex(count, ids, matrix, trajectories)
        self._exact[cache_key] = index
        return index

    def _search_exact(
        self,
        parts: list[tuple[PartKey, Any]],
        emb: np.ndarray,
        limit: int,
        where: Where | None,
        exclude: list[str | None],
    ) -> list[list[tuple[str, float, Transition]]]:
        """Exact nearest ``limit`` per embedding over ``parts``: cosine distance against every
        matching entry, ties broken by id (distances rounded to 1e-6, so that float noise
        between identical keys cannot reorder them)."""
        queries = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        merged: list[list[tuple[float, str, Any]]] = [[] for _ in range(len(emb))]
        for key, col in parts:
            index = self._exact_index(key, col, where)
            if not index.ids:
                continue
            dist = np.round(1.0 - queries @ index.matrix.T, 6).astype(np.float64)
            for j, ex in enumerate(exclude):
                if ex is not None:
                    dist[j, index.trajectory_ids == ex] = np.inf
            k = min(limit, len(index.ids))
            kth = np.partition(dist, k - 1, axis=1)[:, k - 1]
            picked: list[list[int]] = []
            for j in range(len(emb)):
                cand = np.flatnonzero(dist[j] <= kth[j])  # in id order
                cand = cand[np.argsort(dist[j, cand], kind="stable")][:k]
                picked.append([int(i) for i in cand if np.isfinite(dist[j, i])])
            payloads = self._load_payloads(col, [index.ids[i] for row in picked for i in row])
            for j, row in enumerate(picked):
                merged[j].extend((max(0.0, float(dist[j, i])), index.ids[i], payloads[index.ids[i]]) for i in row)
        out = []
        for cands in merged:
            cands.sort(key=lambda c: (c[0], c[1]))
            out.append([(id_, d, t) for d, id_, t in cands[:limit]])
        return out

    def get(self, ids: Sequence[str]) -> list[Transition]:
        """Transitions by id, in the order asked.

        Raises:
            ReplayBufferError: When an id is not stored.
        """
        ids = list(ids)
        found: dict[str, Transition] = {}
        with self._errors():
            by_domain: dict[str, list[str]] = {}
            for id_ in ids:
                by_domain.setdefault(id_.split(":", 1)[0], []).append(id_)
            cols_for = [(self._domain_partitions(d), dom_ids) for d, dom_ids in by_domain.items()]
            for cols, dom_ids in cols_for:
                for col in cols:
                    for chunk in _chunks([i for i in dom_ids if i not in found], self.max_batch_size):
                        res = col.get(ids=chunk, include=["metadatas"])
                        found.update(zip(res["ids"], map(_transition, res["metadatas"])))
            missing = [i for i in ids if i not in found]
            if missing:  # a domain with ':' in its name: look everywhere
                for col in self._list_partitions().values():
                    for chunk in _chunks([i for i in missing if i not in found], self.max_batch_size):
                        res = col.get(ids=chunk, include=["metadatas"])
                        found.update(zip(res["ids"], map(_transition, res["metadatas"])))
        missing = [i for i in ids if i not in found]
        if missing:
            raise ReplayBufferError(f"{len(missing)} id(s) not in the buffer: {missing[:5]}")
        return [found[i] for i in ids]

    def _scan(self, where: Where | None, include: list[str]) -> Iterator[tuple[Any, str, dict[str, Any] | None]]:
        """Every (collection, id, metadata) matching ``where``, page by page."""
        with self._errors():
            parts, residual = self._partitions(where)
            for _, col in parts:
                for res in self._pages(col, residual, include):
                    metas = res["metadatas"] if "metadatas" in include else [None] * len(res["ids"])
                    for id_, meta in zip(res["ids"], metas):
                        yield col, id_, meta

    def _pages(self, col: Any, where: Where | None, include: list[str]) -> Iterator[dict[str, Any]]:
        """``col.get`` answers for the entries matching ``where``, ``max_batch_size`` at a time."""
        offset = 0
        while True:
            res = col.get(where=where, include=include, limit=self.max_batch_size, offset=offset)
            yield res
            if len(res["ids"]) < self.max_batch_size:
                return
            offset += len(res["ids"])

    def initial_states(self, *, domain: str, task_id: str, source: str | None = "real") -> list[Transition]:
        """Stored first steps (``step == 0``) of ``task_id``, sorted by id.

        Args:
            domain: Domain name.
            task_id: Task id.
            source: Provenance to keep (``None`` for any).
        """
        where = _and(
            {"domain": domain},
            {"source": source} if source is not None else None,
            {"initial_task_id": str(task_id)},
        )
        rows = sorted((id_, meta) for _, id_, meta in self._scan(where, ["metadatas"]))
        return [_transition(meta) for _, meta in rows if meta is not None]

    def count(self, where: Where | None = None) -> int:
        """Number of entries, optionally only those matching ``where``."""
        with self._errors():
            parts, residual = self._partitions(where)
            if residual is None:
                return sum(int(col.count()) for _, col in parts)
        return sum(1 for _ in self._scan(where, []))

    def __len__(self) -> int:
        return self.count()

    # -- files ----------------------------------------------------------------------------------

    def export_jsonl(self, path: str | os.PathLike[str], where: Where | None = None) -> int:
        """Write stored transitions as trajectories, one ``Trajectory.to_json()`` per line.

        Transitions are grouped by (domain, trajectory_id) and sorted by step; trajectories are
        written in (domain, trajectory_id) order. The file is replaced atomically.

        Returns:
            The number of trajectories written.
        """
        groups: dict[tuple[str, str], list[Transition]] = {}
        for _, _, meta in self._scan(where, ["metadatas"]):
            t = _transition(meta)  # type: ignore[arg-type]
            groups.setdefault((t.domain, t.trajectory_id), []).append(t)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp" + (".gz" if path.name.endswith(".gz") else ""))
        with open_text(tmp, "wt") as fh:
            for (domain, traj_id), steps in sorted(groups.items()):
                steps.sort(key=lambda t: t.step)
                first = steps[0]
                traj = Trajectory(
                    trajectory_id=traj_id,
                    domain=domain,
                    task_id=first.task_id,
                    goal=first.goal,
                    transitions=steps,
                    source=first.source,
                )
                fh.write(traj.to_json() + "\n")
        os.replace(tmp, path)
        logger.info("Exported %d trajectories to %s", len(groups), path)
        return len(groups)

    def import_jsonl(self, path: str | os.PathLike[str], *, source: str | None = None) -> AddResult:
        """Add the trajectories of a JSONL file (as written by :meth:`export_jsonl`).

        The whole file is parsed before anything is written, so a bad line adds nothing;
        entries already stored are kept (and reported as duplicates).

        Args:
            path: JSONL file (gzip-compressed when it ends in .gz), one trajectory per line
                (blank lines are skipped).
            source: Override the provenance of every imported transition.

        Raises:
            ReplayBufferError: On a line that is not a valid trajectory (names file and line).
        """
        if source is not None and source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        trajectories: list[Trajectory] = []
        with open_text(path, "rt") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    traj = Trajectory.from_json(line)
                    if not isinstance(traj.transitions, list) or not all(
                        isinstance(t, Transition) for t in traj.transitions
                    ):
                        raise TypeError("'transitions' must be a list of transitions")
                except Exception as exc:  # JSON, schema or type errors: all mean a bad line
                    raise ReplayBufferError(
                        f"{path}:{lineno}: not a valid trajectory ({type(exc).__name__}: {exc}); "
                        f"line starts {line.strip()[:80]!r}"
                    ) from exc
                if source is not None:
                    traj.source = source  # type: ignore[assignment]
                    for t in traj.transitions:
                        t.source = source  # type: ignore[assignment]
                trajectories.append(traj)
        result = self.add_trajectories(trajectories)
        logger.info(
            "Imported %d trajectories from %s: %d transitions added, %d duplicates",
            len(trajectories), path, len(result.added), len(result.duplicates),
        )
        return result

    # -- maintenance ----------------------------------------------------------------------------

    def _delete(self, rows: Sequence[tuple[Any, str]]) -> int:
        by_col: dict[int, tuple[Any, list[str]]] = {}
        for col, id_ in rows:
            by_col.setdefault(id(col), (col, []))[1].append(id_)
        self._exact.clear()
        with self._errors():
            for col, ids in by_col.values():
                for chunk in _chunks(ids, self.max_batch_size):
                    col.delete(ids=chunk)
                    for id_ in chunk:
                        self._payloads.pop(id_, None)
        return len(rows)

    def prune(
        self,
        *,
        max_count: int | None = None,
        older_than_s: float | None = None,
        min_utility: float | None = None,
        where: Where | None = None,
    ) -> int:
        """Delete entries; each given criterion applies in turn, all within ``where``.

        Args:
            max_count: Keep at most this many entries (the newest by ``created_at``).
            older_than_s: Delete entries created more than this many seconds ago.
            min_utility: Delete entries whose ``utility`` is below this value.
            where: Restrict pruning to entries matching this Chroma filter.

        Returns:
            How many entries were deleted.
        """
        if max_count is not None and max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {max_count}")
        deleted = 0
        if older_than_s is not None:
            cutoff = time.time() - float(older_than_s)
            old = _and(where, {"created_at": {"$lt": cutoff}})
            deleted += self._delete([(c, i) for c, i, _ in self._scan(old, [])])
        if min_utility is not None:
            low = _and(where, {"utility": {"$lt": float(min_utility)}})
            deleted += self._delete([(c, i) for c, i, _ in self._scan(low, [])])
        if max_count is not None:
            rows = [(m["created_at"], i, c) for c, i, m in self._scan(where, ["metadatas"])]  # type: ignore[index]
            if len(rows) > max_count:
                rows.sort(key=lambda r: (r[0], r[1]))
                deleted += self._delete([(c, i) for _, i, c in rows[: len(rows) - max_count]])
        if deleted:
            logger.info("Pruned %d entries from buffer %r", deleted, self.collection_name)
        return deleted

    def close(self) -> None:
        """Release the client if this buffer created it (an in-memory buffer's data is dropped)."""
        client, self._client = getattr(self, "_client", None), None
        self._parts = {}
        if client is None or not self._owns_client:
            return
        with contextlib.suppress(Exception):
            client.close()
        if self._ephemeral_db is not None and self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.delete_database(self._ephemeral_db)
            self._ephemeral_db = None

    def __enter__(self) -> "ExperienceBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url or self.path or ("memory" if self._ephemeral_db else "client")
        name = self.embedder.name() if getattr(self, "embedder", None) is not None else None
        return f"ExperienceBuffer({where!r}, collection={self.collection_name!r}, embedder={name!r})"
