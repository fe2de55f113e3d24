"""WebArena tasks from ``webarena-verified`` and the WebArena action grammar."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from importlib import resources
from typing import Sequence

from dreamgym_env.domains.actions import ActionGrammar
from dreamgym_env.domains.base import Domain, Task
from dreamgym_env.errors import MissingDependencyError
from dreamgym_env.schema import OutputLimits

logger = logging.getLogger(__name__)

SITES = ("shopping", "shopping_admin", "reddit", "gitlab", "map", "wikipedia")
WEBARENA_VERBS = (
    "click", "type", "hover", "press", "scroll", "new_tab", "tab_focus", "close_tab",
    "goto", "go_back", "go_forward", "stop",
)


@lru_cache(maxsize=1)
def _raw_tasks() -> tuple[dict, ...]:
    try:
        root = resources.files("webarena_verified")
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("webarena-verified", "webarena", "the WebArena tasks") from exc
    path = root / "assets" / "dataset" / "webarena-verified.json"
    return tuple(json.loads(path.read_text(encoding="utf-8")))


def load_webarena_tasks(sites: Sequence[str] | None = None) -> list[Task]:
    """All WebArena-Verified tasks, or those that use only sites among ``sites``.

    Each task keeps its intent (the goal), sites, start URLs (with the package's
    ``__SITE__`` placeholders) and evaluation spec in ``metadata``.
    """
    _check_sites(sites)
    tasks = []
    for raw in _raw_tasks():
        if sites is not None and not set(raw["sites"]) <= set(sites):
            continue
        meta = {
            "sites": list(raw["sites"]),
            "start_urls": list(raw.get("start_urls", [])),
            "intent_template_id": raw.get("intent_template_id"),
            "eval": raw.get("eval", []),
            "revision": raw.get("revision"),
        }
        tasks.append(Task(str(raw["task_id"]), raw["intent"], meta))
    return tasks


def _check_sites(sites: Sequence[str] | None) -> None:
    if sites is not None:
        unknown = sorted(set(sites) - set(SITES))
        if unknown:
            raise ValueError(f"Unknown WebArena sites {unknown}; known: {list(SITES)}")


def load_webarena_lite_tasks(sites: Sequence[str] | None = None) -> list[Task]:
    """WebArena-Lite's 165 tasks (the paper's WebArena benchmark), by their WebArena ids, with
    Lite's own intents (its graders grade those; 137 differ from webarena-verified's), from the
    extract the package ships (``scripts/build_webarena_lite_tasks.py``)."""
    _check_sites(sites)
    raw = json.loads((resources.files("dreamgym_env") / "data" / "webarena" / "webarena_lite_tasks.json").read_text())
    return [
        Task(str(t["task_id"]), t["intent"], {"sites": list(t["sites"]), "start_urls": list(t["start_urls"]),
                                             "intent_template_id": t["intent_template_id"], "lite_task_id": t["lite_task_id"]})
        for t in raw["tasks"] if sites is None or set(t["sites"]) <= set(sites)
    ]


class WebArenaDomain(Domain):
    """WebArena web tasks; states are accessibility trees, next states written whole.

    Args:
        sites: keep only tasks whose sites are all among these (e.g. ``["gitlab"]``).
        subset: "full" (webarena-verified's 812 tasks) or "lite" (WebArena-Lite's 165,
            :func:`load_webarena_lite_tasks`). The domain's name stays "webarena" either way: one
            experience model and one replay buffer serve both, as the sites are the same.
    """

    name = "webarena"
    state_format = "whole"
    max_episode_steps = 30
    max_output_tokens = 512
    output_limits = OutputLimits()
    grammar = ActionGrammar(WEBARENA_VERBS)

    def __init__(self, sites: Sequence[str] | None = None, subset: str = "full"):
        if subset not in ("full", "lite"):
            raise ValueError(f"subset must be 'full' or 'lite', got {subset!r}")
        self.subset = subset
        super().__init__(load_webarena_lite_tasks(sites) if subset == "lite" else load_webarena_tasks(sites))

    def initial_state_context(self, task: Task) -> str:
        sites = ", ".join(task.metadata.get("sites", []))
        urls = ", ".join(task.metadata.get("start_urls", []))
        return f"Sites: {sites}\nStart URL: {urls}"

    def fallback_initial_state(self, task: Task) -> str:
        url = (task.metadata.get("start_urls") or [""])[0]
        return f"[1] RootWebArea '' url={url}"
