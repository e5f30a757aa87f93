"""torch's conv2d in float64 with autograd: the independent reference for every conv formulation.

NHWC inputs and HWIO kernels in, NHWC / HWIO float64 NumPy out. Cheaper than a lax reference as well as
independent of XLA: nothing is compiled, so a table of conv cases costs milliseconds per case.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def conv_vjp(x, kernel, cotangent: np.ndarray | Callable[[np.ndarray], np.ndarray], *, stride=1,
             padding=((0, 0), (0, 0)), groups=1, dilation=1, bias=None):
    """(y, dL/dx, dL/dkernel) for y = conv(x, kernel) + bias and L = <y, cotangent>.

    `padding` is explicit ((top, bottom), (left, right)); `cotangent` is an array of y's shape or a
    function of y (e.g. `np.cos` for L = sum(sin(y)))."""
    import torch

    (top, bottom), (left, right) = padding
    tx = torch.tensor(np.asarray(x, np.float64)).permute(0, 3, 1, 2).requires_grad_()
    tk = torch.tensor(np.asarray(kernel, np.float64)).permute(3, 2, 0, 1).requires_grad_()
    tb = None if bias is None else torch.tensor(np.asarray(bias, np.float64))
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (left, right, top, bottom)), tk, tb, stride=stride,
                                   dilation=dilation, groups=groups)
    y_nhwc = y.detach().permute(0, 2, 3, 1).numpy()
    seed = cotangent(y_nhwc) if callable(cotangent) else cotangent
    y.backward(torch.tensor(np.asarray(seed, np.float64)).permute(0, 3, 1, 2))
    return y_nhwc, tx.grad.permute(0, 2, 3, 1).numpy(), tk.grad.permute(2, 3, 1, 0).numpy()
