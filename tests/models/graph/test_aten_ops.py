"""Single torch functions with their arguments, exported to .pt2 and compared with torch.

Each case wraps one function of a [2, 4, 9, 11] NCHW input in a module, exports it with
torch.export (plain and `run_decompositions()`, so both the training-IR and the core-ATen spelling
of the op are lowered), and checks `load_graph_model`'s output against torch to 1e-4 relative.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxvis.models.graph import load_graph_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_torch_models import apply_jitted, relative_error, to_nhwc  # noqa: E402

W = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.3

CASES = {
    "avg_pool_ceil_no_pad_count": lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    "avg_pool_divisor": lambda x: F.avg_pool2d(x, (2, 3), (1, 2), (1, 1), divisor_override=4),
    "max_pool_dilated_ceil": lambda x: F.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True),
    "adaptive_max": lambda x: F.adaptive_max_pool2d(x, (4, 3)),
    "adaptive_avg_uneven": lambda x: F.adaptive_avg_pool2d(x, (5, 7)),
    "nearest_scale": lambda x: F.interpolate(x, scale_factor=(1.5, 0.5), mode="nearest"),
    "nearest_exact": lambda x: F.interpolate(x, size=(13, 5), mode="nearest-exact"),
    "bilinear_align": lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True),
    "bicubic_antialias": lambda x: F.interpolate(x, size=(5, 4), mode="bicubic", antialias=True),
    "bilinear_antialias": lambda x: F.interpolate(x, size=(4, 6), mode="bilinear", antialias=True),
    "pad_reflect": lambda x: F.pad(x, (1, 2, 3, 0), mode="reflect"),
    "pad_replicate": lambda x: F.pad(x, (2, 0, 1, 1), mode="replicate"),
    "pad_circular": lambda x: F.pad(x, (1, 1, 2, 2), mode="circular"),
    "pad_constant_negative": lambda x: F.pad(x, (-1, 2, 1, -2), value=0.5),
    "grouped_dilated_conv": lambda x: F.conv2d(x, W, None, stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=2),
    "conv_same": lambda x: F.conv2d(x, W, None, padding="same", dilation=2, groups=2),
    "chunk_stack_unbind": lambda x: torch.stack(list(torch.unbind(torch.chunk(x, 2, dim=1)[1], dim=1)), dim=2),
    "narrow_index_select": lambda x: torch.index_select(x.narrow(3, 2, 6), 1, torch.tensor([3, 0, 0])),
    "where_clamp_tensor": lambda x: torch.where(x > 0, x.clamp(min=-0.1, max=0.4), x * 0.5),
    "select_view_transpose": lambda x: x[:, 2].transpose(1, 2).reshape(x.shape[0], 11, 9).softmax(-1),
    "amax_amin_sum": lambda x: x.amax(dim=(2, 3)) - x.amin(dim=1).sum(-1, keepdim=True).mean(1),
    "activations": lambda x: F.elu(x, 0.5) + F.selu(x) + F.celu(x, 0.7) + F.mish(x) + F.softplus(x, 2.0, 1.0)
    + F.hardtanh(x, -0.3, 0.7) + F.leaky_relu(x, 0.2) + F.gelu(x, approximate="tanh") + F.hardsigmoid(x) + F.relu6(x),
    "rsub_pow_div": lambda x: (1.0 - x) ** 2 / (x.abs() + 1) + torch.div(x, 3, rounding_mode="floor"),
    "log_softmax_dim1": lambda x: F.log_softmax(x, dim=1),
    "pixel_shuffle": lambda x: F.pixel_shuffle(x, 2),
    "group_norm_affine_free": lambda x: F.group_norm(x, 2, eps=1e-3),
    "layer_norm_2d": lambda x: F.layer_norm(x, (9, 11)),
    "matmul_batched": lambda x: x @ x.transpose(-1, -2),
    "einsum": lambda x: torch.einsum("bchw,bcgw->bhg", x, x.flip(2)),
    "expand_repeat": lambda x: x.mean((2, 3), keepdim=True).expand(-1, -1, 9, 11) + x[:, :1].repeat(1, 4, 1, 1),
}


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("decompose", [False, True], ids=["training_ir", "core_aten"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_single_function_matches_torch(name, decompose, tmp_path):
    module = _Fn(CASES[name]).eval()
    x = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(0))
    program = torch.export.export(module, (x[:1],))
    if decompose:
        program = program.run_decompositions()
    path = tmp_path / f"{name}.pt2"
    torch.export.save(program, str(path))
    spec = load_graph_model(str(path))
    out = apply_jitted(spec, to_nhwc(x), ("output",))["output"]
    with torch.no_grad():
        expected = to_nhwc(module(x))
    assert np.shape(out) == expected.shape
    assert relative_error(out, expected) < 1e-4
