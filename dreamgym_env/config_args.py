"""Command-line flags from config dataclasses: one ``--flag`` per field, its help from the
field's ``metadata["help"]`` (``dreamgym sft``, ``dreamgym train``, the experiments)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Callable, Container


def _scalar_type(annotation: Any) -> Callable[[str], Any]:
    """int or float when the (string) annotation names one first (``int | None``, ``list[int]``), else str."""
    head = str(annotation).replace("list[", "").split("|")[0].strip(" ]'")
    return {"int": int, "float": float}.get(head, str)


def add_config_arguments(parser: argparse.ArgumentParser, config: type, *, skip: Container[str] = (),
                         list_nargs: str = "*", suppress_scalar_defaults: bool = False) -> list[str]:
    """Add a flag for every field of the dataclass ``config`` not in ``skip``; returns their names.

    Lists take ``list_nargs`` values, dicts are JSON, bools are ``--x/--no-x``. With
    ``suppress_scalar_defaults`` an absent int/float/str flag leaves no attribute
    (``argparse.SUPPRESS``), so that the dataclass's own default applies (for a parser that
    serves several configs whose defaults differ).
    """
    added = []
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "").replace("%", "%%")
        default: Any = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is dataclasses.MISSING:
            default = None
        if isinstance(default, list):
            parser.add_argument(flag, nargs=list_nargs, type=_scalar_type(f.type), default=default, help=help_text)
        elif isinstance(default, dict):
            parser.add_argument(flag, type=json.loads, default=default, help=help_text + " (JSON)")
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif suppress_scalar_defaults:
            parser.add_argument(flag, type=_scalar_type(f.type), default=argparse.SUPPRESS,
                                help=f"{help_text} (default: {default}; {config.__name__})")
        else:
            parser.add_argument(flag, type=_scalar_type(f.type), default=default, help=f"{help_text} (default: {default})")
        added.append(f.name)
    return added
