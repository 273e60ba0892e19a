"""Experience Replay with a reservoir buffer (ER; Chaudhry et al., 2019; Mammoth `models/er.py`).

    L = CE(f(concat(x, x_buf)), concat(y, y_buf)),   (x_buf, y_buf) ~ U(buffer), |x_buf| = minibatch_size

After every optimisation step the stream's batch (not augmented) goes into the reservoir buffer
(Vitter's algorithm R: every sample seen so far is kept with probability size / n_seen). Buffer
samples get the task's training augmentation (Mammoth applies its transform to buffer images).
The CE is over every seen class (Mammoth's single head over all classes).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod


class Replay(ContinualMethod):
    def __init__(self, *args, minibatch_size: int = 10, **kwargs):
        super().__init__(*args, **kwargs)
        if self.memory is None or self.memory.selection != "reservoir":
            raise ConfigError("method=replay needs memory=reservoir (its config selects it; got "
                              f"{None if self.memory is None else self.memory.selection!r})")
        # Mammoth utils/best_args.py, 'seq-mnist' (the nearest setting to split digits), 'er', 500:
        # minibatch_size 10 = batch_size 10, lr 0.1, 1 epoch; every ER entry there has minibatch = batch size.
        self.minibatch_size = minibatch_size

    def phase_data(self, phase, train):
        return train  # the buffer is a separate stream, drawn in loss_terms

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raw_x, raw_y = self.raw_batch
        if len(self.memory):
            buf = self.memory.sample(self.minibatch_size)
            x = torch.cat([x, self.task.augment(buf.x.to(x.device), train=True)])
            y = torch.cat([y, buf.y.to(y.device)])
        terms = {"ce": F.cross_entropy(self.net(x), y)}
        if self.training:
            self.memory.add_batch(raw_x, raw_y)  # Mammoth adds after the step; the step does not see it
        return terms

    def update_memory(self, task: Task) -> None:
        self.memory.record()  # filled online during training
