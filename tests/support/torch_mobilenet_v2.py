"""A PyTorch reference: torchvision's MobileNetV2 module tree, rebuilt without torchvision.

The module names and parameter shapes are torchvision's (`features.N`, `features.N.conv.K`,
`classifier.1`), so `MobileNetV2().load_state_dict(torch.load(path, weights_only=True))` loads
torchvision's checkpoint. Every ReLU6 is `ReLU6` below, whose backward pass can be switched to
guided backprop (`relu_gradient("guided")`) or keras-vis's 'relu' modifier (deconvnet,
`relu_gradient("rectified")`) -- the reference for `jaxvis.models.activations`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

_MODE = {"value": "true"}


class _ModifiedReLU6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if _MODE["value"] == "guided":  # positive gradients through active units only
            return grad.clamp(min=0) * ((x > 0) & (x < 6)).to(grad.dtype)
        return grad.clamp(min=0)  # rectified (deconvnet): positive gradients, whatever the input


class ReLU6(nn.Module):
    def forward(self, x):
        return nn.functional.relu6(x) if _MODE["value"] == "true" else _ModifiedReLU6.apply(x)


@contextlib.contextmanager
def relu_gradient(mode: str):
    """Within the block every ReLU6 backpropagates `mode`: "true", "guided" or "rectified"."""
    assert mode in ("true", "guided", "rectified")
    old, _MODE["value"] = _MODE["value"], mode
    try:
        yield
    finally:
        _MODE["value"] = old


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, inp: int, out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            ReLU6(),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, kernel_size=1))
        layers += [Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        inp = _make_divisible(32)
        last = _make_divisible(1280)
        features: list[nn.Module] = [Conv2dNormActivation(3, inp, stride=2)]
        for t, c, n, s in self.SETTING:
            out = _make_divisible(c)
            for i in range(n):
                features.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                inp = out
        features.append(Conv2dNormActivation(inp, last, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.classifier(x)


def load(path: str) -> MobileNetV2:
    """torchvision's checkpoint at `path` in the reference module, in eval mode."""
    model = MobileNetV2()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()
