"""The buffer's file format: trajectories as JSON lines, gzip-compressed when named ``.gz``."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any, Iterable

from dreamgym_env.buffer.entries import SOURCES
from dreamgym_env.errors import ReplayBufferError
from dreamgym_env.schema import Trajectory, Transition

__all__ = ["open_text", "read_trajectories", "write_trajectories"]


def open_text(path: str | os.PathLike[str], mode: str = "rt") -> Any:
    """Open a UTF-8 text file, through gzip when its name ends in ``.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_trajectories(path: str | os.PathLike[str], transitions: Iterable[Transition]) -> int:
    """Write transitions as trajectories, one ``Trajectory.to_json()`` per line.

    Transitions are grouped by (domain, trajectory_id) and sorted by step; trajectories are
    written in (domain, trajectory_id) order. The file is replaced atomically.

    Returns:
        The number of trajectories written.
    """
    groups: dict[tuple[str, str], list[Transition]] = {}
    for t in transitions:
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
    return len(groups)


def read_trajectories(path: str | os.PathLike[str], *, source: str | None = None) -> list[Trajectory]:
    """Every trajectory of a JSONL file (blank lines skipped), the whole file parsed first.

    Args:
        path: JSONL file, gzip-compressed when it ends in .gz.
        source: Override the provenance of every transition.

    Raises:
        ValueError: For an unknown ``source``.
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
    return trajectories
