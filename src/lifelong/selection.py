"""Task-agnostic prediction by picking the most confident task-specific path.

Methods that keep one path per task (MIND's sub-networks, CLR's reprogramming) predict without a
task id by running every path, scoring each by the largest temperature-scaled softmax probability
over that task's own classes, and keeping the most confident (MIND: `tau`; CLR: max probability).
"""
from __future__ import annotations

from typing import Sequence

import torch


def _scores(probs: list[torch.Tensor], chosen: torch.Tensor) -> torch.Tensor:
    """`[B, sum_j n_j]`: the chosen task's probabilities in its block, -inf elsewhere."""
    scores = torch.cat(probs, dim=1)
    sizes = torch.tensor([p.shape[1] for p in probs], device=scores.device)
    owner = torch.repeat_interleave(torch.arange(len(probs), device=scores.device), sizes)  # class -> task
    return scores.masked_fill(owner.unsqueeze(0) != chosen.unsqueeze(1), float("-inf"))


def lowest_entropy_of_top(task_logits: Sequence[torch.Tensor], temperature: float = 1.0,
                          top: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """MIND's second selector (`accuracy_e`): among the `top` tasks of highest max probability, the one
    whose temperature-scaled softmax over its own classes has the lowest entropy. Same outputs as
    `most_confident`."""
    probs = [torch.softmax(z.float() / temperature, dim=1) for z in task_logits]
    confidence = torch.stack([p.max(dim=1).values for p in probs], dim=1)  # [B, n_tasks]
    entropy = torch.stack([-(torch.special.xlogy(p, p)).sum(1) for p in probs], dim=1)
    candidates = confidence.topk(min(top, len(probs)), dim=1).indices  # [B, top]
    chosen = candidates.gather(1, entropy.gather(1, candidates).argmin(dim=1, keepdim=True)).squeeze(1)
    return _scores(probs, chosen), chosen


def most_confident(task_logits: Sequence[torch.Tensor], temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`task_logits[j]`: `[B, n_j]`, task j's path on task j's classes.

    Returns `(scores, chosen)`: `scores` is `[B, sum_j n_j]` over every seen class, holding the
    chosen task's probabilities in its block and -inf elsewhere (so its argmax is the prediction),
    and `chosen` is `[B]`, the index of the chosen task.
    """
    probs = [torch.softmax(z.float() / temperature, dim=1) for z in task_logits]
    confidence = torch.stack([p.max(dim=1).values for p in probs], dim=1)  # [B, n_tasks]
    chosen = confidence.argmax(dim=1)
    return _scores(probs, chosen), chosen


SELECTORS = {"max_prob": most_confident, "entropy_top2": lowest_entropy_of_top}
