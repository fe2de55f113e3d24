"""Per-family endings of trajectory files (``dreamgym data-stats``): what the data teaches.

An experience model learns to judge endings from the endings in its data: a family with few
failed endings teaches it that acting ends in success. This counts, per task family, episodes,
transitions, successful endings, failed endings (the episode ended with reward 0) and episodes
cut by the step limit (no reward), and the near misses the ``near-miss`` policy recorded.

>>> report = ending_report(["v0.jsonl.gz", "v1.jsonl.gz"])   # doctest: +SKIP
>>> print(format_report(report))                             # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from dreamgym_env.collect import read_trajectories
from dreamgym_env.schema import Trajectory

__all__ = ["FamilyEndings", "add_data_stats_parser", "ending_report", "format_report"]


@dataclass
class FamilyEndings:
    """The endings of one task family's episodes."""

    episodes: int = 0
    transitions: int = 0
    successes: int = 0
    failures: int = 0      # ended (done) with reward 0
    truncated: int = 0     # cut by the step limit, reward 0
    near_misses: Counter = field(default_factory=Counter)

    @property
    def unsuccessful(self) -> int:
        return self.failures + self.truncated

    @property
    def unsuccessful_share(self) -> float:
        return self.unsuccessful / self.episodes if self.episodes else 0.0

    def add(self, traj: Trajectory) -> None:
        self.episodes += 1
        self.transitions += len(traj.transitions)
        if traj.total_reward > 0:
            self.successes += 1
        elif traj.transitions and traj.transitions[-1].done:
            self.failures += 1
        else:
            self.truncated += 1
        for t in traj.transitions:
            kind = (t.extra or {}).get("near_miss")
            if kind:
                self.near_misses[str(kind)] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "transitions": self.transitions, "successes": self.successes,
                "failures": self.failures, "truncated": self.truncated,
                "unsuccessful_share": round(self.unsuccessful_share, 4),
                "near_misses": dict(sorted(self.near_misses.items()))}


def ending_report(sources: Iterable[str | os.PathLike[str] | Trajectory]) -> dict[str, FamilyEndings]:
    """Per-family endings over trajectory files (JSONL / JSONL.gz) or trajectories."""
    report: dict[str, FamilyEndings] = defaultdict(FamilyEndings)
    for source in sources:
        trajectories = [source] if isinstance(source, Trajectory) else read_trajectories(source)
        for traj in trajectories:
            report[traj.task_id].add(traj)
    return dict(sorted(report.items()))


def _total(report: dict[str, FamilyEndings]) -> FamilyEndings:
    total = FamilyEndings()
    for f in report.values():
        total.episodes += f.episodes
        total.transitions += f.transitions
        total.successes += f.successes
        total.failures += f.failures
        total.truncated += f.truncated
        total.near_misses.update(f.near_misses)
    return total


def format_report(report: dict[str, FamilyEndings], min_unsuccessful: float | None = None) -> str:
    """A markdown table of ``report``, one row a family and a total row.

    Args:
        report: from :func:`ending_report`.
        min_unsuccessful: mark families whose share of unsuccessful endings is below it.
    """
    lines = ["| family | episodes | transitions | successes | failed (done) | step limit | unsuccessful share | near misses |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    rows = list(report.items()) + [("**all**", _total(report))]
    for name, f in rows:
        share = f"{f.unsuccessful_share:.2f}"
        if min_unsuccessful is not None and name != "**all**" and f.unsuccessful_share < min_unsuccessful:
            share += " (below)"
        kinds = ", ".join(f"{k} {n}" for k, n in f.near_misses.most_common()) if name != "**all**" else str(sum(f.near_misses.values()))
        lines.append(f"| {name} | {f.episodes:,} | {f.transitions:,} | {f.successes:,} | {f.failures:,} | "
                     f"{f.truncated:,} | {share} | {kinds} |")
    return "\n".join(lines)


def add_data_stats_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dreamgym data-stats`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "data-stats", help="per-family successful and failed endings of trajectory files",
        description="Count, per task family over all the given JSONL(.gz) trajectory files, episodes, "
        "transitions, successful endings, failed endings (done, reward 0), step-limit endings and "
        "recorded near misses. Prints a markdown table (or JSON with --json).",
    )
    parser.add_argument("files", nargs="+", help="trajectory files (one Trajectory JSON line per episode)")
    parser.add_argument("--min-unsuccessful", type=float, default=0.4,
                        help="mark families whose share of unsuccessful endings is below this")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_cmd_data_stats)
    return parser


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from dreamgym_env.errors import DreamGymError

    missing = [f for f in args.files if not os.path.exists(f)]
    if missing:
        raise DreamGymError(f"no such trajectory file: {', '.join(missing)}")
    report = ending_report(args.files)
    if args.json:
        print(json.dumps({"families": {k: v.to_dict() for k, v in report.items()},
                          "total": _total(report).to_dict()}))
    else:
        print(format_report(report, args.min_unsuccessful))
    return 0

