"""Learning without Memorizing (Dhar et al., CVPR 2019), with FACIL's `lwm.py` defaults.

    L = CE(h_t(f(x)), y) + beta * KD_T(h_{<t}(f(x)), h*_{<t}(f*(x)))
                         + gamma * || Q(x) / ||Q(x)||_2 - Q*(x) / ||Q*(x)||_2 ||_1      (Eq. 3)

KD is LwF's distillation on the old heads (`lifelong.losses.distillation`, T = 2: FACIL's
`exp=1/2`). Q and Q* are Grad-CAM maps (Selvaraju et al., ICCV 2017) of the current and the frozen
previous model at the backbone's last convolutional stage (its feature maps before any final
pooling), both for the class the previous model
scores highest among the old classes ("the class with the highest score" of M_{t-1}, Sec. 3):

    Q = relu( sum_k mean_hw(d score / d A_k) * A_k ),   A = the stage's feature maps.

The current model's map is built with `create_graph=True`, so the attention term trains the
network (FACIL detaches both maps, which leaves gamma without effect). One train-mode forward pass
gives the logits and the map (FACIL adds an eval-mode pass for the map).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError
from lifelong.losses import distillation
from lifelong.methods.base import ContinualMethod
from lifelong.models.backbones import AlexNetFeatures, CifarResNet, ConvNet, TorchvisionResNet

# The last convolutional stage of each backbone (FACIL default "layer3" for its ResNet-32; Sec. 5.4:
# "the feature maps of the final conv layer are used to generate attention maps using Grad-CAM"). For the
# convnet that is its last ReLU, before the last max-pool: after that pool, 8x8 digits leave a 1x1 map.
GRADCAM_LAYERS = {CifarResNet: "layer3", ConvNet: lambda net: f"features.{len(net.features) - 2}",
                  TorchvisionResNet: "model.layer4", AlexNetFeatures: "features"}


def attention_distillation(q: torch.Tensor, q_old: torch.Tensor) -> torch.Tensor:
    """L1 distance of the L2-normalised, flattened attention maps, batch mean (Eq. 2; FACIL)."""
    q, q_old = F.normalize(q.flatten(1), dim=1), F.normalize(q_old.flatten(1), dim=1)
    return (q - q_old).abs().sum(1).mean()


class LwM(ContinualMethod):
    keeps_old_model = True

    # search=continual decays beta from its strongest setting (FACIL gridsearch_config.py 'lwm': beta [2])
    stability_key, stability_start = "beta", 2.0

    def __init__(self, *args, beta: float = 1.0, gamma: float = 1.0, T: float = 2.0,
                 gradcam_layer: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = beta  # FACIL default 1: "beta and gamma introduced in Eq. 3, but no values are given"
        self.gamma = gamma  # FACIL default 1 (same remark)
        self.T = T  # FACIL's distillation uses exp = 1/2, i.e. T = 2
        backbone = self.net.backbone
        if gradcam_layer is None:
            gradcam_layer = next((name for kind, name in GRADCAM_LAYERS.items() if isinstance(backbone, kind)), None)
            gradcam_layer = gradcam_layer(backbone) if callable(gradcam_layer) else gradcam_layer
        if gradcam_layer is None:
            raise ConfigError(f"method=lwm needs convolutional feature maps, and backbone {type(backbone).__name__} "
                              f"has none known; valid choices: backbone=convnet, resnet32, gated_resnet32, resnet18, "
                              f"resnet50, alexnet, or name the layer in method.gradcam_layer")
        try:
            backbone.get_submodule(gradcam_layer)
        except AttributeError:
            raise ConfigError(f"method.gradcam_layer={gradcam_layer!r} is not a submodule of {type(backbone).__name__}; "
                              f"valid choices: {[n for n, _ in backbone.named_children()]}") from None
        self.gradcam_layer = gradcam_layer

    def check_scenario(self, scenario) -> None:
        """Refuse a Grad-CAM layer whose maps are 1x1 on this scenario's images: the L2-normalised map is
        then the constant 1, and the attention term is 0 whatever the network does."""
        super().check_scenario(scenario)
        train = scenario[0].train
        image = train.x[:1] if hasattr(train, "x") else train[0][0].unsqueeze(0)
        captured = {}
        def keep_shape(module, inputs, output):
            captured["shape"] = tuple(output.shape[2:])

        handle = self.net.backbone.get_submodule(self.gradcam_layer).register_forward_hook(keep_shape)
        was_training = self.net.backbone.training
        try:
            with torch.no_grad():
                self.net.backbone.eval()(torch.zeros(image.shape, dtype=torch.float32))
        finally:
            handle.remove()
            self.net.backbone.train(was_training)
        if captured.get("shape", (1, 1)) == (1, 1):
            raise ConfigError(f"method.gradcam_layer={self.gradcam_layer} gives 1x1 attention maps on "
                              f"{tuple(image.shape[1:])} images, so the attention distillation is always 0; name an "
                              f"earlier layer in method.gradcam_layer (one with spatial extent)")

    def logits_and_maps(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`net`'s logits and the feature maps of its Grad-CAM layer (a leaf that requires grad for a
        frozen net, so Grad-CAM can differentiate the score with respect to it)."""
        captured = {}

        def keep(module, inputs, output):
            if not output.requires_grad:
                output = output.detach().requires_grad_()
            captured["maps"] = output
            return output

        handle = net.backbone.get_submodule(self.gradcam_layer).register_forward_hook(keep)
        try:
            logits = net(x)
        finally:
            handle.remove()
        return logits, captured["maps"]

    @staticmethod
    def grad_cam(score: torch.Tensor, maps: torch.Tensor, create_graph: bool) -> torch.Tensor:
        grads, = torch.autograd.grad(score.sum(), maps, create_graph=create_graph)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        return F.relu((weights * maps).sum(dim=1))

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.old_net is None:
            return super().loss_terms(x, y)
        n_old = self.task.offset
        logits, maps = self.logits_and_maps(self.net, x)
        with torch.enable_grad():
            old_logits, old_maps = self.logits_and_maps(self.old_net, x)
            target = old_logits[:, :n_old].argmax(1, keepdim=True)  # the old model's top old class
            q_old = self.grad_cam(old_logits.gather(1, target), old_maps, create_graph=False).detach()
        q = self.grad_cam(logits.gather(1, target), maps, create_graph=True)
        return {"ce": self.cross_entropy(logits, y),
                "kd": self.beta * distillation(logits[:, :n_old], old_logits.detach()[:, :n_old], self.T),
                "ad": self.gamma * attention_distillation(q, q_old)}
