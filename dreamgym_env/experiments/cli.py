"""The command line every experiment shares: one flag per config field, logging, and the
command that reruns it (written into the report)."""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

from dreamgym_env.config_args import add_config_arguments
from dreamgym_env.logging_setup import setup_logging

C = TypeVar("C")


def parse_experiment(config: type[C], module: str, description: str, argv: list[str] | None = None) -> tuple[C, str]:
    """(the config built from ``argv``, the ``python -m module ...`` command that reruns it)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, config, list_nargs="+")
    args = parser.parse_args(argv)
    setup_logging()
    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    return config(**vars(args)), command
