"""Per-parameter importance for the quadratic regularisers (EWC, online EWC, SI, MAS, RWalk).

All of them add `sum_i Omega_i (theta_i - theta*_i)^2` over the backbone's parameters and differ in
how Omega is measured. What they keep lives in `ParameterBuffers` (one buffer per parameter, so
checkpoints carry it); what every rank computes between tasks is summed over ranks.
"""
from __future__ import annotations

import torch
from torch import nn


def _key(name: str) -> str:
    return name.replace(".", "__")


class ParameterBuffers(nn.Module):
    """One buffer per parameter of `module`, shaped like it: zeros, or a copy of the parameter."""

    def __init__(self, module: nn.Module, copy: bool = False):
        super().__init__()
        self.names = [n for n, _ in module.named_parameters()]
        for name, p in module.named_parameters():
            self.register_buffer(_key(name), p.detach().clone() if copy else torch.zeros_like(p))

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, _key(name))

    @torch.no_grad()
    def copy_from(self, module: nn.Module) -> None:
        for name, p in module.named_parameters():
            self[name].copy_(p.detach())

    def zero_(self) -> None:
        for name in self.names:
            self[name].zero_()


def quadratic_penalty(module: nn.Module, weight: ParameterBuffers, anchor: ParameterBuffers) -> torch.Tensor:
    """`sum_i weight_i (theta_i - anchor_i)^2` over the trainable parameters of `module`."""
    terms = [(weight[n] * (p - anchor[n]) ** 2).sum() for n, p in module.named_parameters() if p.requires_grad]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class PathIntegral(nn.Module):
    """Zenke et al.'s running path integral (ICML 2017, Eq. 3, "the running sum of the product of the
    gradient with the parameter update"), per parameter of a module:

        w_i <- w_i - g_i * (theta_i(after step) - theta_i(before step))

    with g the gradient of the loss *without* the regulariser (FACIL `path_integral.py` and
    `r_walk.py` run a separate backward for it; we subtract the penalty's analytic gradient from
    the total one, the same number without a second backward). `record` runs before the optimizer
    step, `accumulate` after it. `w` is a buffer: a run resumed mid-task continues the sum.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.w = ParameterBuffers(module)
        self._before: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def record(self, module: nn.Module, penalty_grad=None) -> None:
        """`penalty_grad(name, p)`: the regulariser's gradient for parameter `name` (None: none)."""
        self._before = {}
        for name, p in module.named_parameters():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if penalty_grad is not None:
                g -= penalty_grad(name, p)
            self._before[name] = (p.detach().clone(), g)

    @torch.no_grad()
    def accumulate(self, module: nn.Module) -> None:
        for name, p in module.named_parameters():
            if name in self._before:
                before, g = self._before[name]
                self.w[name].sub_(g * (p.detach() - before))
        self._before = {}


def gradient_statistic(method, module: nn.Module, data, loss_fn, statistic, num_samples: int = -1):
    """Mean over the task's training samples of `statistic(grad)` of `loss_fn(x, y)`, per parameter of
    `module`: a pass in eval mode over un-augmented training-size batches (FACIL's batches), each
    batch's statistic weighted by its size; under DDP each rank takes its share and the sums are
    all-reduced, so the result is identical on every rank. `num_samples > 0` stops after about that
    many samples (FACIL's `num_samples // batch_size + 1` batches)."""
    import itertools

    params = dict(module.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = data.batches("train", device=method.device, batch_size=data.batch_size)
    if num_samples > 0:
        batches = itertools.islice(batches, num_samples // data.batch_size + 1)
    was_training, n_seen = method.net.training, 0
    method.net.eval()
    for x, y in method.shard(batches):
        method.net.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss_fn(x, y).backward()
        for n, p in params.items():
            if p.grad is not None:
                total[n] += statistic(p.grad.detach()) * len(y)
        n_seen += len(y)
    method.net.zero_grad(set_to_none=True)
    method.net.train(was_training)
    n_seen = method.all_reduce_sum(torch.tensor(float(n_seen), device=method.device)).item()
    return {n: method.all_reduce_sum(t) / max(n_seen, 1.0) for n, t in total.items()}
