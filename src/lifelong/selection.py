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


def path_scores(logits: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the selectors need from one path: `(probabilities, confidence, entropy)` of its
    temperature-scaled softmax over its own classes (`[B, n_j]`, `[B]`, `[B]`)."""
    probs = torch.softmax(logits.float() / temperature, dim=1)
    return probs, probs.max(dim=1).values, -(torch.special.xlogy(probs, probs)).sum(1)


def choose_most_confident(confidence: torch.Tensor, entropy: torch.Tensor | None = None) -> torch.Tensor:
    """`confidence`: `[B, n_tasks]`; the index of the path of highest max probability."""
    return confidence.argmax(dim=1)


def choose_lowest_entropy_of_top(confidence: torch.Tensor, entropy: torch.Tensor, top: int = 2) -> torch.Tensor:
    """Among the `top` paths of highest max probability, the one of lowest entropy."""
    candidates = confidence.topk(min(top, confidence.shape[1]), dim=1).indices  # [B, top]
    return candidates.gather(1, entropy.gather(1, candidates).argmin(dim=1, keepdim=True)).squeeze(1)


def lowest_entropy_of_top(task_logits: Sequence[torch.Tensor], temperature: float = 1.0,
                          top: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """MIND's second selector (`accuracy_e`): among the `top` tasks of highest max probability, the one
    whose temperature-scaled softmax over its own classes has the lowest entropy. Same outputs as
    `most_confident`."""
    probs, confidence, entropy = zip(*(path_scores(z, temperature) for z in task_logits))
    chosen = choose_lowest_entropy_of_top(torch.stack(confidence, dim=1), torch.stack(entropy, dim=1), top)
    return _scores(list(probs), chosen), chosen


def most_confident(task_logits: Sequence[torch.Tensor], temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`task_logits[j]`: `[B, n_j]`, task j's path on task j's classes.

    Returns `(scores, chosen)`: `scores` is `[B, sum_j n_j]` over every seen class, holding the
    chosen task's probabilities in its block and -inf elsewhere (so its argmax is the prediction),
    and `chosen` is `[B]`, the index of the chosen task.
    """
    probs = [torch.softmax(z.float() / temperature, dim=1) for z in task_logits]
    confidence = torch.stack([p.max(dim=1).values for p in probs], dim=1)  # [B, n_tasks]
    chosen = choose_most_confident(confidence)
    return _scores(probs, chosen), chosen


SELECTORS = {"max_prob": most_confident, "entropy_top2": lowest_entropy_of_top}
# The same rules on the paths' confidences and entropies (what `lifelong.paths` caches).
CHOOSERS = {"max_prob": choose_most_confident, "entropy_top2": choose_lowest_entropy_of_top}
