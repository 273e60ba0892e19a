"""Model inversion: a generator trained to produce images the frozen model recognises.

ABD (Smith et al., ICCV 2021; official `learners/datafree_helper.py`, `Teacher.get_images`)
trains the generator G after each task by minimising, over batches x = G(z), z ~ N(0, I),

    L_syn = w_con * CE(f*(x) / tau, argmax f*(x))                          (content)
          + w_div * (1 + sum_k pbar_k log pbar_k / log K)                  (diversity)
          + w_bn  * mean_l KL(N(mu_l^run, var_l^run) || N(mu_l(x), var_l(x)))   (BatchNorm statistics)
          + w_pri * || x - blur(x) ||^2 / numel                            (smoothness prior)

with f* the frozen model over its K seen classes, pbar the batch mean of softmax(f*(x)) and the
KL taken per channel at the input of every BatchNorm layer of f*. DeepInversion's baseline in the
same code uses the same synthesis; both methods hold a `Synthesizer` and run its `phase()`.

Defaults are the official CIFAR-100 ones, `--deep_inv_params 1e-3 5e1 1e-3 1e3 1`
(lr, BN weight, prior weight, content temperature, content weight) and `--power_iters 10000`
(`experiments/cifar100-*.sh`).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lifelong.errors import ConfigError
from lifelong.losses import kl_gaussians
from lifelong.methods.base import Phase
from lifelong.models.generator import Generator, build_generator

BN_REDUCTIONS = ("mean", "sum")


# ----------------------------------------------------------------------------- the loss terms
def content_loss(logits: torch.Tensor, temperature: float = 1000.0) -> torch.Tensor:
    """CE of the tempered prediction against its own argmax (`datafree_helper.py` L136-137)."""
    return F.cross_entropy(logits / temperature, logits.argmax(1))


def diversity_loss(logits: torch.Tensor) -> torch.Tensor:
    """1 - normalised entropy of the batch-mean prediction: 0 when every class is equally likely
    on average, 1 when the batch collapses onto one class (`datafree_helper.py` L140-141)."""
    n_classes = logits.shape[1]
    if n_classes < 2:  # the entropy of one class is 0 and log K = 0: nothing to balance
        return logits.new_zeros(())
    mean_prob = F.softmax(logits, dim=1).mean(0)
    return 1.0 + torch.special.xlogy(mean_prob, mean_prob).sum() / math.log(n_classes)


def bn_kl(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KL(N(running) || N(batch)) per channel of a BatchNorm input `x`, averaged over channels.

    Batch statistics over every dimension but the channel one (biased variance), eps = 1e-8 on
    both variances, as the official hook (`DeepInversionFeatureHook.hook_fn`); this is KL, not
    DeepInversion's L2 distance between means and variances.
    """
    dims = [0, *range(2, x.dim())]
    mean, var = x.mean(dims), x.var(dims, unbiased=False) + eps
    return kl_gaussians(running_mean.to(x.dtype), running_var.to(x.dtype) + eps, mean, var).mean()


def blur_kernel_1d(size: int = 5, sigma: float = 1.0, faithful_sigma: bool = True) -> torch.Tensor:
    """Normalised Gaussian taps. The official `Gaussiansmoothing` writes exp(-((d) / (2 sigma))^2),
    i.e. an effective sigma of sqrt(2) * sigma; `faithful_sigma=False` gives exp(-d^2 / (2 sigma^2))."""
    d = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-((d / (2 * sigma)) ** 2)) if faithful_sigma else torch.exp(-(d**2) / (2 * sigma**2))
    return (taps / taps.sum()).float()


def reflect_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """`F.pad(x, (p, p, p, p), mode="reflect")` from flips and concatenation, whose CUDA backward is
    deterministic (that of reflection padding is not, and runs set deterministic algorithms)."""
    if p == 0:
        return x
    x = torch.cat([x[..., 1 : p + 1].flip(-1), x, x[..., -p - 1 : -1].flip(-1)], dim=-1)
    return torch.cat([x[..., 1 : p + 1, :].flip(-2), x, x[..., -p - 1 : -1, :].flip(-2)], dim=-2)


class GaussianBlur(nn.Module):
    """Depthwise 2-D Gaussian blur with reflect padding (the official `Gaussiansmoothing(3, 5, 1)`)."""

    def __init__(self, channels: int = 3, size: int = 5, sigma: float = 1.0, faithful_sigma: bool = True):
        super().__init__()
        taps = blur_kernel_1d(size, sigma, faithful_sigma)
        kernel = torch.outer(taps, taps).expand(channels, 1, size, size).clone()
        self.register_buffer("weight", kernel, persistent=False)  # follows the config, not trained state
        self.pad = size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(reflect_pad(x, self.pad), self.weight.to(x.dtype), groups=x.shape[1])


def smoothness_prior(x: torch.Tensor, blur: GaussianBlur) -> torch.Tensor:
    """Mean squared difference between the images and their blurred copy (`datafree_helper.py` L151-153)."""
    return F.mse_loss(x, blur(x))


class BNStatistics:
    """Within `with`, records `bn_kl` at the input of every BatchNorm layer of `model` it runs."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.kls: list[torch.Tensor] = []
        self._handles: list = []

    def _hook(self, module, inputs, output) -> None:
        self.kls.append(bn_kl(inputs[0], module.running_mean, module.running_var))

    def __enter__(self) -> "BNStatistics":
        self.kls = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


# ----------------------------------------------------------------------------- the generator and its training
class IterationIndices(torch.utils.data.Dataset):
    """The "data" of the synthesis phase: one item per generator iteration (noise is drawn in the step)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(i)


class Synthesizer(nn.Module):
    """The generator, its synthesis losses and its persistent Adam optimizer.

    Training is a `Phase` named "synthesis" (see `phase()`): a Lightning fit of `iters` steps whose
    batches are iteration indices, so it gets Lightning's progress bar, logging
    (`synthesis/loss/<term>`) and `trainer.limit_train_batches`. Its optimizer is `optimizer()`,
    which by default returns the same Adam every time: the official code creates it once
    (`datafree.py` L26-27) and warm-starts generator and moments across tasks.
    """

    def __init__(self, generator: Generator, iters: int = 10000, batch_size: int = 128, lr: float = 1e-3,
                 content_weight: float = 1.0, content_temperature: float = 1000.0, diversity_weight: float = 1.0,
                 bn_weight: float = 50.0, bn_reduction: str = "mean", prior_weight: float = 1e-3,
                 blur_size: int = 5, blur_sigma: float = 1.0, blur_faithful_sigma: bool = True,
                 reinit_generator: bool = False, reset_optimizer: bool = False, channels: int = 3):
        super().__init__()
        if bn_reduction not in BN_REDUCTIONS:
            raise ConfigError(f"method.bn_reduction={bn_reduction!r} is unknown; valid choices: {list(BN_REDUCTIONS)}")
        if iters < 0:
            raise ConfigError(f"method.synthesis_iters={iters} must be >= 0")
        if batch_size < 2:
            raise ConfigError(f"method.synthesis_batch_size={batch_size} must be >= 2 (BatchNorm statistics)")
        self.generator = generator
        self.blur = GaussianBlur(channels, blur_size, blur_sigma, blur_faithful_sigma)
        self.iters, self.batch_size, self.lr = iters, batch_size, lr
        self.content_weight, self.content_temperature = content_weight, content_temperature
        self.diversity_weight, self.bn_weight, self.bn_reduction = diversity_weight, bn_weight, bn_reduction
        self.prior_weight = prior_weight
        self.reinit_generator, self.reset_optimizer = reinit_generator, reset_optimizer
        self._adam: torch.optim.Adam | None = None
        self._pending_adam_state: dict | None = None

    def optimizer(self, params: Iterator[nn.Parameter]) -> torch.optim.Adam:
        """Called once per synthesis phase (by `configure_optimizers`): warm start unless told otherwise."""
        if self.reinit_generator:
            self.generator.reset_parameters()  # R-DFCIL's cl-lite port builds a fresh generator per task
        if self._adam is None or self.reinit_generator or self.reset_optimizer:
            fresh = self._adam is not None or self.reinit_generator or self.reset_optimizer
            self._adam = torch.optim.Adam(params, lr=self.lr)  # default betas, no weight decay (official)
            if self._pending_adam_state and not fresh:  # resumed: the saved moments, as in an unbroken run
                self._adam.load_state_dict(self._pending_adam_state)
            self._pending_adam_state = None
        return self._adam

    def phase(self) -> Phase:
        data = DataLoader(IterationIndices(self.iters), batch_size=1, shuffle=False)
        return Phase("synthesis", 1, self.optimizer, data=data, parameters=self.generator.parameters,
                     validate=False)

    def loss_terms(self, teacher: nn.Module) -> dict[str, torch.Tensor]:
        """One synthesis step's weighted terms; `teacher` (eval mode) maps images to seen-class logits."""
        with torch.autocast(self.generator.fc.weight.device.type, enabled=False):  # KL takes logs of variances
            x = self.generator.sample(self.batch_size)
            with BNStatistics(teacher) as stats:
                logits = teacher(x)
            terms = {
                "content": self.content_weight * content_loss(logits, self.content_temperature),
                "diversity": self.diversity_weight * diversity_loss(logits),
                "prior": self.prior_weight * smoothness_prior(x, self.blur),
            }
            if stats.kls:  # a backbone without BatchNorm (e.g. the MLP) has no statistics to match
                kl = torch.stack(stats.kls)
                terms["bn"] = self.bn_weight * (kl.mean() if self.bn_reduction == "mean" else kl.sum())
        return terms

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Synthetic images for replay: the generator in eval mode (running BN statistics), no grad."""
        self.generator.eval()
        return self.generator.sample(n)

    # Adam's moments are part of the state: resuming must warm-start exactly as an unbroken run.
    def get_extra_state(self) -> dict:
        if self._adam is not None:
            return {"adam": self._adam.state_dict()}
        return {"adam": self._pending_adam_state}

    def set_extra_state(self, state: dict) -> None:
        adam_state = (state or {}).get("adam")
        if self._adam is not None and adam_state:
            self._adam.load_state_dict(adam_state)
        else:
            self._pending_adam_state = adam_state


def build_synthesizer(
    image_size: int = 32,
    channels: int = 3,
    generator: str = "auto",
    synthesis_iters: int = 10000,  # `--power_iters 10000` (experiments/cifar100-*.sh; 50,000 for ImageNet)
    synthesis_batch_size: int = 128,  # the training batch size (`sample(..., self.batch_size)`, datafree.py L153)
    synthesis_lr: float = 1e-3,  # `--deep_inv_params` [0]: Adam lr
    content_weight: float = 1.0,  # `--deep_inv_params` [4]
    content_temperature: float = 1000.0,  # `--deep_inv_params` [3]: makes the content term very weak
    diversity_weight: float = 1.0,  # implicit 1 in `Teacher.get_images` (datafree_helper.py L140-141)
    bn_weight: float = 50.0,  # `--deep_inv_params` [1]
    bn_reduction: str = "mean",  # official: each layer's KL x 50 / number of BN layers, i.e. mean over layers
    prior_weight: float = 1e-3,  # `--deep_inv_params` [2]
    blur_sigma: float = 1.0,  # `Gaussiansmoothing(3, 5, 1)`: kernel 5, sigma 1 as written ...
    blur_faithful_sigma: bool = True,  # ... but effective sigma sqrt(2) (datafree_helper.py L215-218)
    reinit_generator: bool = False,  # official: one generator warm-started across tasks (never reset)
    reset_generator_optimizer: bool = False,  # official: one Adam, created once (datafree.py L26-27)
) -> Synthesizer:
    """The synthesis options ABD and DeepInversion share, as flat method config keys."""
    return Synthesizer(
        build_generator(generator, image_size, channels), synthesis_iters, synthesis_batch_size, synthesis_lr,
        content_weight, content_temperature, diversity_weight, bn_weight, bn_reduction, prior_weight,
        blur_size=5, blur_sigma=blur_sigma, blur_faithful_sigma=blur_faithful_sigma,
        reinit_generator=reinit_generator, reset_optimizer=reset_generator_optimizer, channels=channels,
    )
