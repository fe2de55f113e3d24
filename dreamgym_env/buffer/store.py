"""The replay buffer: transitions in Chroma, retrieved by (state, action) similarity.

:class:`ExperienceBuffer` is the facade; each concern lives in its own module:

- :mod:`~dreamgym_env.buffer.entries`: ids, retrieval keys and the metadata of an entry;
- :mod:`~dreamgym_env.buffer.partitions`: one Chroma collection per (domain, source), and
  routing ``where`` filters to them;
- :mod:`~dreamgym_env.buffer.payloads`: the cache of stored transitions by id;
- :mod:`~dreamgym_env.buffer.exact_index`: exact search over in-memory embedding matrices;
- :mod:`~dreamgym_env.buffer.hnsw_search`: approximate search with Chroma's HNSW index;
- :mod:`~dreamgym_env.buffer.jsonl`: trajectories as JSON lines;
- :mod:`~dreamgym_env.buffer.pruning`: which entries pruning deletes.

Embeddings are computed here (not by Chroma) and passed explicitly, so a batch of (state,
action) pairs costs one embedding pass and one search per partition queried.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence
from urllib.parse import urlparse

import numpy as np

from dreamgym_env.buffer.entries import (
    AddResult,
    Retrieved,
    entry_metadata,
    entry_transition,
    key_text,
    transition_id,
)
from dreamgym_env.buffer.exact_index import ExactIndexCache, unit_rows
from dreamgym_env.buffer.hnsw_search import search_hnsw
from dreamgym_env.buffer.jsonl import read_trajectories, write_trajectories
from dreamgym_env.buffer.partitions import (
    PartKey,
    Partitions,
    Where,
    and_where,
    chunks,
    pages,
    resolve_embedder,
)
from dreamgym_env.buffer.payloads import PayloadCache
from dreamgym_env.buffer.pruning import prune_entries
from dreamgym_env.errors import ReplayBufferError
from dreamgym_env.schema import Trajectory, Transition

logger = logging.getLogger(__name__)

__all__ = ["AddResult", "ExperienceBuffer", "Retrieved", "key_text", "transition_id"]

DEFAULT_COLLECTION = "dreamgym"
# query(exact="auto") searches exactly up to this many entries. Exact search costs one float32
# matrix product over them per batch of queries (~0.5 GFLOP a query at 10^6 entries of 256
# dims); above this size Chroma's HNSW index answers faster: figures in docs/benchmarks.md.
EXACT_MAX_ENTRIES = 200_000


def _start_hint(host: str, port: int) -> str:
    return f"chroma run --path ./chroma --host {host} --port {port}"


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

    Attributes:
        exact_max_entries: The most entries ``query(exact="auto")`` searches exactly
            (:data:`EXACT_MAX_ENTRIES`); above, it uses Chroma's HNSW index.

    With none of ``path``, ``host`` or ``client`` the buffer lives in memory, isolated from other
    in-memory buffers of the process (its own Chroma database, dropped by :meth:`close`).
    Entries written by other processes are seen at once by HNSW queries and within 2 s by exact
    ones (``query(exact=True)``); a (domain, source) partition that another process creates
    becomes visible within 2 s.

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
        self._client: Any = None
        self._parts: Partitions | None = None
        self.url: str | None = None
        self.path = None if path is None else str(path)
        self.collection_name = collection
        self._payloads = PayloadCache()
        self._exact = ExactIndexCache(lambda col, where, include: self._pages(col, where, include))
        self.exact_max_entries = EXACT_MAX_ENTRIES
        self._told_auto_hnsw = False
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
        self._parts = Partitions(self._client, collection)
        try:
            with self._errors():
                self.max_batch_size = int(self._client.get_max_batch_size())
                existing = self._parts.all(check=False)
                self.embedder = self._parts.embedder = resolve_embedder(embedder, list(existing.values()))
                for col in existing.values():
                    self._parts.check_embedder(col)
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

    # -- payload cache statistics (benchmarks/step_overhead.py reports them) --------------------

    @property
    def payload_cache_size(self) -> int:
        """Transitions kept in memory by id, at most (50,000 by default)."""
        return self._payloads.max_size

    @payload_cache_size.setter
    def payload_cache_size(self, value: int) -> None:
        self._payloads.max_size = int(value)

    @property
    def payload_hits(self) -> int:
        """Retrieved transitions served from the payload cache."""
        return self._payloads.hits

    @property
    def payload_misses(self) -> int:
        """Retrieved transitions read from Chroma."""
        return self._payloads.misses

    # -- Chroma access --------------------------------------------------------------------------

    def _partition(self, domain: str, source: str, *, create: bool = False) -> Any:
        """The Chroma collection of (domain, source); None when it does not exist (and not create)."""
        return self._parts.get(domain, source, create=create)  # type: ignore[union-attr]

    def _pages(self, col: Any, where: Where | None, include: list[str]) -> Iterator[dict[str, Any]]:
        return pages(col, where, include, self.max_batch_size)

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
            for chunk in chunks(todo, self.max_batch_size):
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
        metas = [entry_metadata(t) for t in transitions]  # validates before anything is written
        with self._errors():
            by_domain: dict[str, list[str]] = {}
            for t, id_ in zip(transitions, ids):
                by_domain.setdefault(t.domain, []).append(id_)
            existing: set[str] = set()
            for domain, dom_ids in by_domain.items():
                existing.update(self._existing(self._parts.of_domain(domain), list(dict.fromkeys(dom_ids))))
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
            for (domain, source), idx in groups.items():
                col = self._partition(domain, source, create=True)
                for chunk in chunks(idx, self.max_batch_size):
                    docs = [key_text(transitions[i].state, transitions[i].action) for i in chunk]
                    chunk_ids = [ids[i] for i in chunk]
                    embeddings = self._embed(docs)
                    col.add(ids=chunk_ids, embeddings=embeddings, documents=docs, metadatas=[metas[i] for i in chunk])
                    self._exact.added(col, chunk_ids, embeddings)
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
            found.update(self._existing(self._parts.of_domain(domain), dom_ids))
        missing = [i for i in ids if i not in found]
        if missing:  # a domain with ':' in its name: look everywhere
            found.update(self._existing(self._parts.all().values(), missing))
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
                self._exact.changed(col, filtered_only=True)  # a filter on utility may match others now
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
        exact: bool | Literal["auto"] = False,
    ) -> list[list[Retrieved]]:
        """Top-``n_results`` stored transitions nearest to each (state, action) pair.

        All pairs are searched together, one search per partition matched by ``where`` (one
        for the env's ``{"$and": [{"domain": d}, {"source": s}]}``). Entries of
        ``exclude_trajectory_ids[i]`` are dropped from result ``i``.

        Chroma's HNSW search is approximate, and which of several equally distant entries it
        returns depends on how its graph was built (not reproducible from one build to the
        next: real data holds many identical (state, action) keys). ``exact=True`` instead
        compares each pair with every matching entry and breaks distance ties by id, so two
        buffers holding the same transitions give the same answer. It keeps each partition's
        unit embeddings in memory as one float32 matrix (1 KiB an entry with the default
        256-dim embedder; read once, then grown as this buffer adds entries), and a batch of
        pairs costs one matrix product with it: see docs/benchmarks.md for its cost by size.
        ``exact="auto"`` searches exactly while the partitions searched hold at most
        :attr:`exact_max_entries` entries, and with HNSW above (logged once).

        Args:
            states: Current states.
            actions: Actions taken in them (same length).
            n_results: Neighbours per pair.
            where: Chroma metadata filter, e.g. ``{"source": "real"}``.
            exclude_trajectory_ids: Per pair, a trajectory id whose entries must not be returned
                (the querying trajectory), or ``None``.
            exact: ``True`` for exact search (see above), ``False`` for Chroma's HNSW index,
                ``"auto"`` to choose by size.

        Returns:
            One list per pair, nearest first; empty lists when nothing matches.

        Raises:
            ValueError: On lengths that differ, or an ``exact`` other than True, False, "auto".
        """
        if exact not in (True, False, "auto"):
            raise ValueError(f"exact must be True, False or 'auto', got {exact!r}")
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
            parts, residual = self._parts.matching(where)
            if not parts:
                return [[] for _ in range(n)]
            emb = self._embed([key_text(s, a) for s, a in zip(states, actions)])
            if exact == "auto":
                exact = self._exact_suits(parts)
            if exact:
                hits = self._search_exact(parts, emb, n_results, residual, exclude)
            else:
                hits = search_hnsw(parts, emb, n_results, residual, exclude, self._load_payloads)
        return [[Retrieved(id_, dist, t) for id_, dist, t in row] for row in hits]

    def auto_exact(self, where: Where | None = None) -> bool:
        """Whether ``query(exact="auto", where=where)`` would search exactly now."""
        with self._errors():
            parts, _ = self._parts.matching(where)
            return self._exact_suits(parts)

    def _exact_suits(self, parts: list[tuple[PartKey, Any]]) -> bool:
        """Whether ``query(exact="auto")`` searches ``parts`` exactly (by their entry count)."""
        entries = sum(self._exact.entry_count(col) for _, col in parts)
        if entries <= self.exact_max_entries:
            return True
        if not self._told_auto_hnsw:
            self._told_auto_hnsw = True
            logger.info(
                "Retrieving with Chroma's HNSW index (approximate): %d entries to search, more than "
                "exact_max_entries=%d. Pass exact=True (env: exact_retrieval=True) for exact search.",
                entries, self.exact_max_entries,
            )
        return False

    def _load_payloads(self, col: Any, ids: Sequence[str]) -> dict[str, Transition]:
        return self._payloads.load(col, ids, self.max_batch_size)

    def _search_exact(
        self,
        parts: list[tuple[PartKey, Any]],
        emb: np.ndarray,
        n_results: int,
        where: Where | None,
        exclude: list[str | None],
    ) -> list[list[tuple[str, float, Transition]]]:
        """Exact nearest ``n_results`` per embedding over ``parts`` (ties broken by id)."""
        queries = unit_rows(emb)
        merged: list[list[tuple[float, str, Transition]]] = [[] for _ in range(len(emb))]
        for (domain, _), col in parts:
            found = self._exact.get(domain, col, where).search(queries, n_results, exclude)
            payloads = self._load_payloads(col, [id_ for row in found for _, id_ in row])
            for j, row in enumerate(found):
                merged[j].extend((d, id_, payloads[id_]) for d, id_ in row)
        out = []
        for cands in merged:
            cands.sort(key=lambda c: (c[0], c[1]))
            out.append([(id_, d, t) for d, id_, t in cands[:n_results]])
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
            cols_for = [(self._parts.of_domain(d), dom_ids) for d, dom_ids in by_domain.items()]
            for cols, dom_ids in cols_for:
                for col in cols:
                    for chunk in chunks([i for i in dom_ids if i not in found], self.max_batch_size):
                        res = col.get(ids=chunk, include=["metadatas"])
                        found.update(zip(res["ids"], map(entry_transition, res["metadatas"])))
            missing = [i for i in ids if i not in found]
            if missing:  # a domain with ':' in its name: look everywhere
                for col in self._parts.all().values():
                    for chunk in chunks([i for i in missing if i not in found], self.max_batch_size):
                        res = col.get(ids=chunk, include=["metadatas"])
                        found.update(zip(res["ids"], map(entry_transition, res["metadatas"])))
        missing = [i for i in ids if i not in found]
        if missing:
            raise ReplayBufferError(f"{len(missing)} id(s) not in the buffer: {missing[:5]}")
        return [found[i] for i in ids]

    def _scan(self, where: Where | None, include: list[str]) -> Iterator[tuple[Any, str, dict[str, Any] | None]]:
        """Every (collection, id, metadata) matching ``where``, page by page."""
        with self._errors():
            parts, residual = self._parts.matching(where)
            for _, col in parts:
                for res in self._pages(col, residual, include):
                    metas = res["metadatas"] if "metadatas" in include else [None] * len(res["ids"])
                    for id_, meta in zip(res["ids"], metas):
                        yield col, id_, meta

    def initial_states(self, *, domain: str, task_id: str, source: str | None = "real") -> list[Transition]:
        """Stored first steps (``step == 0``) of ``task_id``, sorted by id.

        Args:
            domain: Domain name.
            task_id: Task id.
            source: Provenance to keep (``None`` for any).
        """
        where = and_where(
            {"domain": domain},
            {"source": source} if source is not None else None,
            {"initial_task_id": str(task_id)},
        )
        rows = sorted((id_, meta) for _, id_, meta in self._scan(where, ["metadatas"]))
        return [entry_transition(meta) for _, meta in rows if meta is not None]

    def count(self, where: Where | None = None) -> int:
        """Number of entries, optionally only those matching ``where``."""
        with self._errors():
            parts, residual = self._parts.matching(where)
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
        written = write_trajectories(path, (entry_transition(meta) for _, _, meta in self._scan(where, ["metadatas"])))  # type: ignore[arg-type]
        logger.info("Exported %d trajectories to %s", written, path)
        return written

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
        trajectories = read_trajectories(path, source=source)
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
        with self._errors():
            for col, ids in by_col.values():
                self._exact.changed(col)
                for chunk in chunks(ids, self.max_batch_size):
                    col.delete(ids=chunk)
                    self._payloads.discard(chunk)
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
        deleted = prune_entries(
            self._scan, self._delete,
            max_count=max_count, older_than_s=older_than_s, min_utility=min_utility, where=where,
        )
        if deleted:
            logger.info("Pruned %d entries from buffer %r", deleted, self.collection_name)
        return deleted

    def close(self) -> None:
        """Release the client if this buffer created it (an in-memory buffer's data is dropped)."""
        client, self._client = getattr(self, "_client", None), None
        if getattr(self, "_parts", None) is not None:
            self._parts.forget()
        self._exact.clear()
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
