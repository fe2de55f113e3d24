"""A small transformer policy that scores the admissible actions of a text observation.

Observation and each candidate action (with the element line it acts on) are encoded by the
same 2-layer transformer over hashed word tokens; an action's logit comes from the pair
(observation, action), the value from the observation alone. Trained from scratch in minutes on
a CPU; it needs ``info["admissible_actions"]``.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch
from torch import nn

from dreamgym_env.patch import line_ref

_TOKEN = re.compile(r"\w+|[^\w\s]")


def hash_tokens(text: str, vocab_size: int, max_tokens: int) -> list[int]:
    """Hashed word/punctuation token ids in [1, vocab_size) (0 is padding), at most ``max_tokens``."""
    return [1 + zlib.crc32(t.encode()) % (vocab_size - 1) for t in _TOKEN.findall(text.lower())[:max_tokens]]


def action_with_element(action: str, observation: str) -> str:
    """``action`` followed by the observation's line of the element it names (``[ref]``)."""
    start, end = action.find("["), action.find("]")
    if 0 <= start < end:
        ref = action[start + 1 : end]
        for line in observation.splitlines():
            if line_ref(line) == ref:
                return f"{action} {line.strip()}"
    return action


class TextActionPolicy(nn.Module):
    """Actor-critic over admissible actions.

    Args:
        vocab_size: hashed token buckets.
        dim: model width.
        layers, heads: transformer encoder shape.
        max_tokens: tokens kept of an observation (actions keep 32).
    """

    def __init__(self, vocab_size: int = 16384, dim: int = 128, layers: int = 2, heads: int = 4, max_tokens: int = 256):
        super().__init__()
        self.vocab_size, self.max_tokens = vocab_size, max_tokens
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Embedding(max_tokens, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.score = nn.Sequential(nn.Linear(3 * dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.value = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def encode(self, texts: Sequence[str], max_tokens: int) -> torch.Tensor:
        """Mean-pooled encodings, ``(len(texts), dim)``."""
        ids = [hash_tokens(t, self.vocab_size, max_tokens) or [1] for t in texts]
        width = max(len(i) for i in ids)
        batch = torch.zeros((len(ids), width), dtype=torch.long, device=self.embed.weight.device)
        for row, tokens in enumerate(ids):
            batch[row, : len(tokens)] = torch.tensor(tokens)
        pad = batch == 0
        x = self.embed(batch) + self.position(torch.arange(width, device=batch.device))
        x = self.encoder(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def forward(self, observations: Sequence[str], actions: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ``(B, K)`` with -inf where a row has fewer than K actions, values ``(B,)``)."""
        obs = self.encode(observations, self.max_tokens)
        k = max(len(a) for a in actions)
        flat = [action_with_element(a, o) for o, acts in zip(observations, actions) for a in acts]
        enc = self.encode(flat, 32)
        logits = torch.full((len(actions), k), float("-inf"), device=obs.device)
        start = 0
        for row, acts in enumerate(actions):
            n = len(acts)
            a = enc[start : start + n]
            o = obs[row].expand(n, -1)
            logits[row, :n] = self.score(torch.cat([o, a, o * a], -1)).squeeze(-1)
            start += n
        return logits, self.value(obs).squeeze(-1)

    # -- the interface the trainers use (shared with GenerativeTextPolicy) ---------------------
    needs_admissible_actions = True

    def act(self, observations: Sequence[str], actions: Sequence[Sequence[str]], rng: torch.Generator,
            greedy: bool = False) -> tuple[list[str], list[int], torch.Tensor, torch.Tensor]:
        """(action texts, choices (indices into ``actions``), log-probabilities, values)."""
        logits, values = self(observations, actions)
        dist = torch.distributions.Categorical(logits=logits)
        picks = logits.argmax(-1) if greedy else torch.multinomial(dist.probs, 1, generator=rng).squeeze(-1)
        chosen = [acts[int(k)] for acts, k in zip(actions, picks)]
        return chosen, [int(k) for k in picks], dist.log_prob(picks), values

    def evaluate_actions(self, observations: Sequence[str], actions: Sequence[Sequence[str]],
                         choices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probabilities of ``choices``, entropies, values) under the current weights."""
        logits, values = self(observations, actions)
        dist = torch.distributions.Categorical(logits=logits)
        return dist.log_prob(torch.as_tensor(list(choices))), dist.entropy(), values
