"""How ``dreamgym sft`` splits one global batch over processes and micro-batches.

Hugging Face Accelerate runs the processes (``accelerate launch --num_processes N``, multi-node
through its own config), wraps the model for DDP or FSDP, places it on devices, syncs gradients
and reduces tensors. What it lacks for our batches, and this module adds:

- A global batch is a token-budget batch of whole examples (``train.make_batches``: length-
  bucketed, so padding stays small; this is our sequence bucketing). Each process takes an
  interleaved share of its rows (:func:`shard`) and cuts it into micro-batches within
  ``micro_batch_tokens`` padded tokens (:func:`micro_batches`): gradient accumulation.
- Every process runs the same number of micro-batches (:func:`micro_steps`); a process whose
  share runs short runs a zero-weight pad micro-batch, so DDP/FSDP collectives stay in step.
- L_SFT is a per-token mean of each kind (reasoning, state). Each part's token sums are divided
  by the token counts of the *whole global batch* (:func:`target_counts`) and multiplied by the
  number of processes (DDP and FSDP average gradients), so the summed gradient equals the one-
  process gradient of the same global batch for any number of processes and micro-batches.
"""

from __future__ import annotations

from typing import Sequence

from dreamgym_env.sft.data import JUDGEMENT, REASONING, STATE


def shard(batch: Sequence[int], rank: int, world: int) -> list[int]:
    """This process's rows of a global batch: every ``world``-th, starting at ``rank`` (the rows
    are sorted by length, so each process gets a like share of tokens)."""
    return list(batch[rank::world])


def micro_batches(indices: Sequence[int], lengths: Sequence[int], micro_batch_tokens: int) -> list[list[int]]:
    """``indices`` (in order) cut into runs whose padded size (rows x longest) fits
    ``micro_batch_tokens``; a single longer row gets a micro-batch of its own."""
    out: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in indices:
        n = lengths[i]
        if current and max(longest, n) * (len(current) + 1) > micro_batch_tokens:
            out.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        out.append(current)
    return out


def micro_steps(batch: Sequence[int], lengths: Sequence[int], world: int, micro_batch_tokens: int) -> int:
    """Micro-batches every process runs for ``batch``: the most any process's share needs."""
    return max(len(micro_batches(shard(batch, r, world), lengths, micro_batch_tokens)) for r in range(world))


def target_counts(rows: Sequence[dict], judgement_weight: float = 1.0) -> tuple[float, int]:
    """Reasoning and state target tokens of ``rows`` (the answer tokens the loss averages over;
    a row's first token is never a target); a judgement token counts ``judgement_weight`` times
    in the reasoning term, whose mean is weighted so."""
    n_reasoning, n_state = 0.0, 0
    for row in rows:
        kinds = row["loss_mask"][1:]
        n_reasoning += sum(1 for k in kinds if k == REASONING) + judgement_weight * sum(1 for k in kinds if k == JUDGEMENT)
        n_state += sum(1 for k in kinds if k == STATE)
    return n_reasoning, n_state
