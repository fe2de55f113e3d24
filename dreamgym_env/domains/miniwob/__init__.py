"""MiniWoB++: task families, text states, action grammar, and the real browser env.

``MiniWoBDomain`` and the serialiser need no browser; ``MiniWoBRealEnv`` (imported lazily)
needs the ``miniwob`` extra plus Chromium and ChromeDriver.
"""

from __future__ import annotations

from dreamgym_env.domains.miniwob.domain import MiniWoBDomain, real_dataset_path
from dreamgym_env.domains.miniwob.serialize import admissible_actions, parse_state, serialize_dom
from dreamgym_env.domains.miniwob.tasks import FAMILIES, MINIWOB_VERBS, TASK_IDS, load_miniwob_tasks


def __getattr__(name: str):
    if name == "MiniWoBRealEnv":
        from dreamgym_env.domains.miniwob.real_env import MiniWoBRealEnv

        return MiniWoBRealEnv
    if name == "is_miniwob_available":
        from dreamgym_env.domains.miniwob.browser import is_miniwob_available

        return is_miniwob_available
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FAMILIES", "MINIWOB_VERBS", "TASK_IDS", "MiniWoBDomain", "MiniWoBRealEnv", "admissible_actions",
    "is_miniwob_available", "load_miniwob_tasks", "parse_state", "real_dataset_path", "serialize_dom",
]
