"""Next states as patches: the changed element lines of a state, and ``-[ref]`` for removals.

A state is text whose element lines start (after indentation) with ``[ref]``. A patch lists
the new or changed element lines whole, and ``-[ref]`` for every element that disappeared.
Lines without a ref (headers, URLs) are kept as they are by a patch. A removal that repeats the
removed element's text (``-[10] tab "Tab #3"``, a slip models make) still removes ``[10]``.
"""

from __future__ import annotations

import re

from dreamgym_env.errors import ModelOutputError

_REF = re.compile(r"^\s*\[([^\]\s]+)\]")
_REMOVE = re.compile(r"^-\[([^\]\s]+)\](?:\s.*)?$")


def line_ref(line: str) -> str | None:
    """The ``ref`` of an element line ``[ref] ...``, or None for other lines."""
    match = _REF.match(line)
    return match.group(1) if match else None


def _ref_key(ref: str) -> tuple[int, int | str]:
    return (0, int(ref)) if ref.isdigit() else (1, ref)


def make_patch(state: str, next_state: str) -> list[str] | None:
    """The patch that turns ``state`` into ``next_state``, or None when no patch can express it.

    A patch cannot express changes to lines without a ref or a reordering of elements; callers
    fall back to the whole next state then.
    """
    before = state.splitlines()
    after = next_state.splitlines()
    before_refs = {line_ref(l): l for l in before if line_ref(l) is not None}
    after_refs = {line_ref(l): l for l in after if line_ref(l) is not None}
    patch = [l for r, l in after_refs.items() if before_refs.get(r) != l]
    patch += [f"-[{r}]" for r in before_refs if r not in after_refs]
    try:
        if apply_patch(state, patch) != next_state:
            return None
    except ModelOutputError:
        return None
    return patch


def apply_patch(state: str, patch: list[str]) -> str:
    """Apply ``patch`` to ``state``.

    Changed elements replace their line in place; new elements go before the first element
    with a larger numeric ref (DOM order), else at the end.

    Raises:
        ModelOutputError: a patch line that is neither an element line nor a removal.
    """
    lines = state.splitlines()
    for entry in patch:
        removal = _REMOVE.match(entry.strip())
        if removal:
            ref = removal.group(1)
            lines = [l for l in lines if line_ref(l) != ref]
            continue
        ref = line_ref(entry)
        if ref is None:
            raise ModelOutputError(f"patch line is neither '[ref] ...' nor '-[ref]': {entry!r}")
        index = next((i for i, l in enumerate(lines) if line_ref(l) == ref), None)
        if index is not None:
            lines[index] = entry
            continue
        key = _ref_key(ref)
        insert_at = next(
            (i for i, l in enumerate(lines) if (r := line_ref(l)) is not None and _ref_key(r) > key),
            len(lines),
        )
        lines.insert(insert_at, entry)
    return "\n".join(lines)
