"""Logging for the command-line entry points: one format, and the HTTP/Chroma client loggers
kept at WARNING (at INFO, httpx logs every model request an env makes)."""

from __future__ import annotations

import logging
import sys

#: Libraries whose INFO records are one line per request.
NOISY_LOGGERS = ("httpx", "chromadb", "urllib3")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG when ``verbose``), with the noisy client loggers quieted."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
