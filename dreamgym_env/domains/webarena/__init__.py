"""WebArena: the 812 tasks of the ``webarena-verified`` package (and WebArena-Lite's 165),
accessibility-tree states."""

from dreamgym_env.domains.webarena.domain import WebArenaDomain, load_webarena_lite_tasks, load_webarena_tasks

__all__ = ["WebArenaDomain", "load_webarena_lite_tasks", "load_webarena_tasks"]
