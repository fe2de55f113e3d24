"""A Unicode text space: any string up to ``max_length`` characters belongs to it."""

from __future__ import annotations

import string
from typing import Any, Sequence

import numpy as np
from gymnasium.spaces import Text

#: Characters that ``sample()`` draws from (membership accepts every Unicode character).
SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " äéñßøç中文日本語"


class UnicodeText(Text):
    """Gymnasium ``Text`` space whose members are any ``str`` of at most ``max_length`` chars.

    ``Text`` restricts members to a charset; web pages and agent actions are arbitrary Unicode,
    so membership here checks only the type and the length. ``sample()`` returns, half of the
    time, one of ``examples`` (e.g. well-formed actions of a grammar) and otherwise random text,
    so that random policies exercise both valid and invalid actions.

    Args:
        max_length: the longest string in the space.
        min_length: the shortest string in the space.
        examples: strings that ``sample()`` may return as they are.
        seed: seed of the space's random generator.
    """

    def __init__(
        self,
        max_length: int,
        *,
        min_length: int = 0,
        examples: Sequence[str] = (),
        seed: int | np.random.Generator | None = None,
    ):
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)
        self.examples = tuple(e for e in examples if min_length <= len(e) <= max_length)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        if mask is None and probability is None and self.examples and self.np_random.random() < 0.5:
            return self.examples[int(self.np_random.integers(len(self.examples)))]
        return super().sample(mask=mask, probability=probability)

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
            and self.examples == other.examples
        )
