"""Default buffers: a persistent buffer seeded once from real trajectories shipped as JSONL."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

from dreamgym_env.backends.default_model import cache_dir
from dreamgym_env.buffer.store import ExperienceBuffer

logger = logging.getLogger(__name__)


def _digest(files: Sequence[Path]) -> str:
    sha = hashlib.sha1()
    for f in sorted(files):
        sha.update(f.name.encode())
        sha.update(f.read_bytes())
    return sha.hexdigest()[:12]


def seeded_buffer(name: str, data_files: Sequence[str | os.PathLike], root: Path | None = None) -> ExperienceBuffer:
    """A PersistentClient buffer under ``<cache>/buffers/<name>-<digest>`` holding ``data_files``
    (JSONL or JSONL.gz trajectories, imported with ``source="real"`` on first use).

    The digest of the files names the directory, so new data gives a new buffer; an import
    that was interrupted is finished on the next call.
    """
    files = [Path(f) for f in data_files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"seed data missing: {missing}")
    path = (root or cache_dir() / "buffers") / f"{name}-{_digest(files)}"
    buffer = ExperienceBuffer(path)
    marker = path / "SEEDED"
    if not marker.exists():
        logger.info("Seeding the %s buffer at %s from %d file(s) (once)", name, path, len(files))
        for f in files:
            result = buffer.import_jsonl(f, source="real")
            logger.info("%s: %d transitions added, %d already there", f.name, len(result.added), len(result.duplicates))
        marker.write_text("\n".join(f.name for f in files))
    return buffer
