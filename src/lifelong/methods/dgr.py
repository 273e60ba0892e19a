"""Deep Generative Replay (Shin, Lee, Kim, Kim, NeurIPS 2017), as ABD's code runs it as a baseline:
GT-RIPL/AlwaysBeDreaming-DFCIL `learners/dgr.py` (`Generative_Replay`), `learners/dgr_helper.py`
(`Scholar`), `models/autoencoder.py` (the VAE), `experiments/cifar100-*.sh` ("DGR").

A scholar is a solver (the classifier f) and a generator (a VAE G). For task t > 0, with a real
batch (x, y), replayed images x' ~ G*(z) from the frozen generator of the previous scholar, labelled
by the frozen previous solver f* over its n_old classes (y' = argmax f*(x')), and r = n_old / n_seen:

    L_solver = mean_{i in x u x'} w_i CE(f(x_i), y_i) + mu KD_T(f(x')[:, :n_old], f*(x'))
    L_gen    = mean_{i in x u x'} w_i BCE(G(x_i), x_i) + KL(q(z | x_i) || N(0, I)) / n_pixels

with w_i = r for old-class labels and 1 - r for new-class ones (the official `dw_cls`: weights 1 on
the first task), KD_T the soft cross-entropy at temperature T without T^2. The KL is not weighted
(official); `weight_kl=True` weights it with w_i too (van de Ven & Tolias weight the whole ELBO), which
keeps the KL-to-reconstruction ratio of task 0 instead of doubling it (mean weight 1/2 after task 0). Both are trained at
every step of the same loop, the generator on real plus replayed images, each with its own optimizer
(the official `optimizer` and `generator.optimizer`, both built by `new_optimizer` from the solver's
settings: `generator_optimizer: null`; a different one can be given, see conf/method/dgr.yaml). The
method therefore steps its two optimizers itself (Lightning's manual optimization); the scheduler,
when there is one, is built for each, as the official `generator_scheduler`. After each task the scholar is copied and frozen (`old_net`,
`old_generator`): the generator is stored between tasks, in the state dict, and counted in
results.json's `memory`.

The generator works on [0, 1] pixels (the official DGR data is not normalised, `dgr=True` in
`get_transform`): real batches are un-normalised for it, replayed images normalised for the solver.
Deviations: the solver sees normalised images (the official DGR solver sees [0, 1] pixels); per-task
heads, so logits exist only for seen classes (the official head is sliced to them too). Named keys that
leave the official loop, all off by default: `generator_steps` (VAE updates per solver update, van de Ven
& Tolias's `--g-iters`), `weight_kl`, `generator_optimizer`, `generator_widths` (conf/method/dgr.yaml).
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError
from lifelong.losses import distillation
from lifelong.methods.abd import class_balance_weights
from lifelong.methods.base import ContinualMethod, freeze
from lifelong.models.vae import VAE


class DGR(ContinualMethod):
    keeps_old_model = True

    def __init__(self, *args, mu: float = 1.0, T: float = 2.0, class_balance: bool = True, image_size: int = 32,
                 channels: int = 3, z_size: int = 1024,
                 generator_widths: tuple[int, int, int] = (64, 128, 512), replay_batch_size: int | None = None,
                 generator_optimizer=None, generator_steps: int = 1, weight_kl: bool = False, **kwargs):
        kwargs.setdefault("ce_scope", "seen")
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False  # two optimizers, one step each per batch (training_step)
        # Official: the generator's optimizer is `new_optimizer(self.generator)`, the solver's settings; None = that.
        self.generator_optimizer_factory = generator_optimizer
        if generator_steps < 1:
            raise ConfigError(f"method.generator_steps={generator_steps}: the VAE's updates per solver update; use >= 1")
        # Official: one VAE update per solver update (1); more is van de Ven & Tolias's `--g-iters`.
        self.generator_steps = generator_steps
        # Official: the data weights scale the VAE's reconstruction only (False); True: its KL too.
        self.weight_kl = weight_kl
        self.mu = mu  # `--mu 1` for DGR in experiments/cifar100-*.sh
        self.T = T  # `--temp` default 2.0 (run_dfcil.py), `self.DTemp`
        # Official: `mappings` r / 1 - r per label on the solver CE and the generator's reconstruction.
        self.class_balance = class_balance
        # Official: as many replayed images as real ones (`previous_scholar.sample(len(x), ...)`); None = that.
        self.replay_batch_size = replay_batch_size
        # CIFAR_GEN: AutoEncoder(in_channel=3, img_sz=32, kernel_num=512, z_size=1024).
        self.generator = VAE(image_size, channels, z_size, tuple(generator_widths))
        self.old_generator: VAE | None = None

    # ----------------------------------------------------------------------------- task hooks
    def end_task(self, task, data) -> None:
        super().end_task(task, data)  # old_net: the frozen solver
        self.old_generator = freeze(copy.deepcopy(self.generator))  # the frozen generator of the scholar

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.old_generator is not None:
            yield self.old_generator

    # ----------------------------------------------------------------------------- pixels
    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        augment = self.task.augment
        if augment is None or not hasattr(augment, "mean"):
            return x.new_zeros(()), x.new_ones(())
        return augment.mean.to(x), augment.std.to(x)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0, 1)

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    # ----------------------------------------------------------------------------- training
    def replay(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` images from the frozen previous VAE, in [0, 1], and the frozen previous solver's scores on them."""
        pixels = self.old_generator.sample(n)
        with torch.no_grad():
            scores = self.old_net(self.from_pixels(pixels))  # over the old classes
        return pixels, scores

    def weights(self, y: torch.Tensor) -> torch.Tensor:
        n_old = self.task.offset
        if not self.class_balance:
            return torch.ones(len(y), device=y.device)
        return class_balance_weights(y, n_old, n_old + self.task.n_classes)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        n_real, n_old = len(x), self.task.offset
        pixels = self.to_pixels(x)
        if self.old_generator is not None:
            replay_pixels, replay_scores = self.replay(self.replay_batch_size or n_real)
            x = torch.cat([x, self.from_pixels(replay_pixels)])
            y = torch.cat([y, replay_scores.argmax(1)])
            pixels = torch.cat([pixels, replay_pixels])
        weights = self.weights(y)
        logits = self.net(x)
        terms = {"ce": (F.cross_entropy(logits, y, reduction="none") * weights).mean()}
        if self.old_generator is not None:
            terms["kd"] = self.mu * distillation(logits[n_real:, :n_old], replay_scores, self.T)
        generator = self.generator.loss_terms(pixels, weights, self.weight_kl)
        terms["gen_recon"], terms["gen_kl"] = generator["recon"], generator["kl"]
        return terms

    def generator_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The VAE's loss alone on the real batch plus a fresh replayed one (`generator_steps` > 1)."""
        pixels = self.to_pixels(x)
        if self.old_generator is not None:
            replay_pixels, replay_scores = self.replay(self.replay_batch_size or len(x))
            pixels = torch.cat([pixels, replay_pixels])
            y = torch.cat([y, replay_scores.argmax(1)])
        return sum(self.generator.loss_terms(pixels, self.weights(y), self.weight_kl).values())

    def configure_optimizers(self):
        if self.trainer.gradient_clip_val:
            raise ConfigError(f"trainer.gradient_clip_val={self.trainer.gradient_clip_val}: method=dgr steps its two "
                              "optimizers itself (manual optimization), which Lightning does not clip; "
                              "set trainer.gradient_clip_val=null")
        generator = {id(p) for p in self.generator.parameters()}
        solver = [p for p in self.trainable_parameters() if id(p) not in generator]
        optimizers = [self.optimizer_factory(solver),
                      (self.generator_optimizer_factory or self.optimizer_factory)(list(self.generator.parameters()))]
        if self.scheduler_factory is None:
            return optimizers
        return optimizers, [self.scheduler_factory(o) for o in optimizers]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """The official order: both losses from one batch, then one step of the solver and of the generator.
        Neither loss reaches the other's parameters, so one backward of their sum gives both gradients.
        With `generator_steps` k > 1 the VAE then takes k - 1 more steps on the same real batch."""
        optimizers = self.optimizers()
        loss = super().training_step(batch, batch_idx)  # the named terms, logged
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(loss)
        for optimizer in optimizers:
            optimizer.step()
        generator_optimizer = optimizers[1]
        for _ in range(self.loop_length(self.generator_steps) - 1):  # the VAE alone, on fresh replay (debug=smoke: none)
            generator_optimizer.zero_grad()
            self.manual_backward(self.generator_loss(*batch))
            generator_optimizer.step()
        return loss

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()  # per epoch, as the official `scheduler.step()` and `generator_scheduler.step()`
        super().on_train_epoch_end()

    def extra_results(self) -> dict:
        params = list(self.generator.parameters())
        return {"memory": {"generator_parameters": sum(p.numel() for p in params),
                           "generator_bytes": sum(p.numel() * p.element_size() for p in params),
                           "stored_images": 0}}

    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().on_load_state_dict_structure(state_dict)
        if self.old_generator is None and any(k.startswith("old_generator.") for k in state_dict):
            self.old_generator = freeze(copy.deepcopy(self.generator))
