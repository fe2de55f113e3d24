"""Replay buffer: transitions with provenance in Chroma, retrieved by (state, action) similarity.

Names are imported lazily, so ``import dreamgym_env.buffer`` does not import chromadb until an
attribute is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers only; at run time __getattr__ imports these lazily
    from dreamgym_env.buffer.embedders import (  # noqa: F401
        HashingEmbeddingFunction,
        MiniLMEmbeddingFunction,
        get_embedder,
    )
    from dreamgym_env.buffer.store import (  # noqa: F401
        AddResult,
        ExperienceBuffer,
        Retrieved,
        key_text,
        transition_id,
    )

_EXPORTS = {
    "HashingEmbeddingFunction": "embedders",
    "MiniLMEmbeddingFunction": "embedders",
    "get_embedder": "embedders",
    "AddResult": "store",
    "ExperienceBuffer": "store",
    "Retrieved": "store",
    "key_text": "store",
    "transition_id": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
