"""Domains: task sets, action grammars and state formats of the simulated environments."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from dreamgym_env.domains.base import Domain, Task


def _webarena(**kwargs: Any) -> Domain:
    from dreamgym_env.domains.webarena import WebArenaDomain

    return WebArenaDomain(**kwargs)


def _webarena_lite(**kwargs: Any) -> Domain:
    from dreamgym_env.domains.webarena import WebArenaDomain

    return WebArenaDomain(subset="lite", **kwargs)


def _miniwob(**kwargs: Any) -> Domain:
    from dreamgym_env.domains.miniwob import MiniWoBDomain

    return MiniWoBDomain(**kwargs)


DOMAINS: dict[str, Callable[..., Domain]] = {"webarena": _webarena, "webarena-lite": _webarena_lite, "miniwob": _miniwob}


def make_domain(domain: str | Domain, **kwargs: Any) -> Domain:
    """A Domain instance from a name (keyword arguments with value None are ignored)."""
    if isinstance(domain, Domain):
        return domain
    factory = DOMAINS.get(domain)
    if factory is None:
        close = difflib.get_close_matches(domain, DOMAINS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown domain {domain!r}; known: {sorted(DOMAINS)}.{hint}")
    return factory(**{k: v for k, v in kwargs.items() if v is not None})


__all__ = ["DOMAINS", "Domain", "Task", "make_domain"]
