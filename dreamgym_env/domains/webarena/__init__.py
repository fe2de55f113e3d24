"""WebArena: the 812 tasks of the ``webarena-verified`` package, accessibility-tree states."""

from dreamgym_env.domains.webarena.domain import WebArenaDomain, load_webarena_tasks

__all__ = ["WebArenaDomain", "load_webarena_tasks"]
