"""PyTorch references for the graph front-ends: small CNNs outside the zoo, exports, and hooks.

- `EfficientBlockNet`: EfficientNet-style MBConv blocks (SiLU, squeeze-excitation, BatchNorm).
- `ConvNeXtNet`: ConvNeXt-style blocks (7x7 depthwise, permute, LayerNorm, Linear, GELU, layer scale).
- `MobileNetV3Net`: MobileNetV3-style blocks (hardswish, hardsigmoid squeeze-excitation, ReLU).
- `UNetDecoder`: a U-Net-style encoder/decoder (max pool, transposed conv, bilinear / nearest
  upsampling, skip concatenation, GroupNorm, leaky ReLU, pad, softmax over classes at the end).
- `SmallVGG`: VGG-with-BatchNorm layout (`features.N`, `classifier.N`, flatten of C·H·W).
- `OpSoup`: odd ops with all their attributes (ceil-mode / count_include_pad pools, dilated and
  grouped convs, asymmetric pads, chunk / split / select / view / transpose, ELU / softplus /
  hardtanh / clamp / sigmoid, bicubic resize, amax, log_softmax).

`MODELS`: the models both front-ends' tests export, by name (two zoo references and the above).
`randomize(model)` draws weights and norm statistics; `capture(model, x_nhwc)` runs a forward with
hooks on every submodule and returns `{module path: output}` (NCHW as NHWC), as lucent names layers.
`apply_jitted(spec, x, layers)` is `spec.apply_preprocessed` as one compiled program.
"""

from __future__ import annotations

import dataclasses

import fast_compile
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, c, r, gate=nn.Sigmoid, act=nn.SiLU):
        super().__init__()
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, r, 1), act(), nn.Conv2d(r, c, 1), gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MBConv(nn.Module):
    def __init__(self, inp, out, expand, stride, kernel=3):
        super().__init__()
        mid = inp * expand
        self.expand = nn.Sequential(nn.Conv2d(inp, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
                                nn.BatchNorm2d(mid), nn.SiLU())
        self.se = SqueezeExcite(mid, max(1, inp // 4))
        self.project = nn.Sequential(nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out))
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class EfficientBlockNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(16, 16, 1, 1), MBConv(16, 24, 4, 2, 5), MBConv(24, 24, 4, 1))
        self.head = nn.Sequential(nn.Conv2d(24, 64, 1), nn.BatchNorm2d(64), nn.SiLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1))


class ConvNeXtBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class ConvNeXtNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6))
        self.stages = nn.Sequential(ConvNeXtBlock(16), nn.Sequential(LayerNorm2d(16), nn.Conv2d(16, 32, 2, 2)),
                                    ConvNeXtBlock(32))
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(self.norm(x.mean([-2, -1])))


class InvertedResidualV3(nn.Module):
    def __init__(self, inp, mid, out, kernel, stride, use_se, act):
        super().__init__()
        layers = []
        if mid != inp:
            layers.append(nn.Sequential(nn.Conv2d(inp, mid, 1, bias=False), nn.BatchNorm2d(mid), act()))
        layers.append(nn.Sequential(nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
                                    nn.BatchNorm2d(mid), act()))
        if use_se:
            layers.append(SqueezeExcite(mid, mid // 4, gate=nn.Hardsigmoid, act=nn.ReLU))
        layers.append(nn.Sequential(nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out)))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()),
            InvertedResidualV3(16, 16, 16, 3, 2, True, nn.ReLU),
            InvertedResidualV3(16, 72, 24, 3, 2, False, nn.ReLU),
            InvertedResidualV3(24, 96, 24, 5, 1, True, nn.Hardswish),
            nn.Sequential(nn.Conv2d(24, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish()))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class UNetDecoder(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.LeakyReLU(0.1))
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.enc3 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec1 = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
        up = self.up1(d2) + F.interpolate(d2, scale_factor=2.0, mode="nearest")
        d1 = self.dec1(torch.cat([up, F.pad(e1, (1, 1, 1, 1))[:, :, 1:-1, 1:-1]], dim=1))
        return torch.softmax(self.out(d1), dim=1)


class SmallVGG(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        cfg, layers, inp = (16, "M", 32, 32, "M", 64, "M"), [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(inp, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                inp = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Linear(64 * 9, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class OpSoup(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 12, 3, stride=2, padding=2, dilation=2)
        self.b = nn.Conv2d(12, 12, 3, padding=(1, 2), groups=3)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.pool2 = nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        self.pool3 = nn.AvgPool2d(2, 1, padding=1, count_include_pad=True)
        self.up = nn.ConvTranspose2d(12, 6, 3, stride=2, padding=1, output_padding=1, groups=3)
        self.elu, self.softplus = nn.ELU(0.7), nn.Softplus(beta=2.0, threshold=1.0)
        self.fc = nn.Linear(6 * 4, 5)

    def forward(self, x):
        x = self.a(x)
        x = F.hardtanh(self.b(x), -0.5, 2.0)
        x = torch.cat(list(torch.chunk(x, 3, dim=1))[::-1], 1)
        x = self.pool1(x) + self.pool2(x)
        x = self.pool3(self.softplus(x))
        x = self.elu(self.up(x))
        left, right = torch.split(x, [2, 4], dim=1)
        x = torch.cat([right.clamp(min=-0.2), torch.sigmoid(left)], 1)
        x = F.interpolate(x, size=(5, 7), mode="bicubic", align_corners=False)
        x = x.transpose(1, 3).amax(dim=2)  # [B, W, C]
        x = x[:, 1:5].reshape(x.shape[0], -1)
        return F.log_softmax(self.fc(x), dim=-1)


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with activations of order one, non-trivial norm statistics; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.ndim > 1:
                fan_in = (
                    param[0].numel()
                    if not isinstance(module, nn.ConvTranspose2d)
                    else param.shape[0] * param[0, 0].numel() // max(1, module.groups)
                )
                param.copy_(torch.randn(param.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif name == "weight":
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.3)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) * 1.5 + 0.5)
    return model.eval()


def to_nhwc(value: torch.Tensor) -> np.ndarray:
    value = value.detach().numpy()
    return value.transpose(0, 2, 3, 1) if value.ndim == 4 else value


@torch.no_grad()
def capture(model: nn.Module, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """{module path: its forward output (last call)} for every submodule, NCHW as NHWC."""
    out, handles = {}, []
    for name, module in model.named_modules():
        if name:
            hook = lambda m, args, output, name=name: out.__setitem__(name, to_nhwc(output.clone()))  # noqa: E731
            handles.append(module.register_forward_hook(hook))
    try:
        out[""] = to_nhwc(model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))))
    finally:
        for handle in handles:
            handle.remove()
    return out


def export_pt2(model: nn.Module, path, size: int = 64, batch: int = 1) -> str:
    """torch.export the model for [batch, 3, size, size] inputs and save it as a .pt2 archive."""
    program = torch.export.export(model, (torch.zeros(batch, 3, size, size),))
    torch.export.save(program, str(path))
    return str(path)


def apply_jitted(spec, x, layers) -> dict:
    """`spec.apply_preprocessed(x, layers)` under one `jax.jit` (quick XLA options) (the variables an argument, not
    constants): run eagerly, every op of every node compiles on its own, most of a test's time."""
    run = fast_compile.jit(
        lambda variables, x: dataclasses.replace(spec, variables=variables).apply_preprocessed(x, layers)
    )
    return run(spec.variables, x)


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))


def _zoo_resnet18():
    import torch_zoo_reference as zoo  # tests/support, on sys.path through tests/conftest.py

    return zoo.resnet18(num_classes=10)


def _mobilenet_v2():
    import torch_mobilenet_v2

    return torch_mobilenet_v2.MobileNetV2(num_classes=10)


MODELS = {
    "resnet18": _zoo_resnet18,
    "mobilenet_v2": _mobilenet_v2,
    "small_vgg_bn": SmallVGG,
    "efficientnet_block": EfficientBlockNet,
    "convnext_block": ConvNeXtNet,
    "mobilenet_v3_block": MobileNetV3Net,
    "unet_decoder": UNetDecoder,
    "op_soup": OpSoup,
}
