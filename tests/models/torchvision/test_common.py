"""torch's pooling on NHWC maps: values and the input gradient a render needs, against torch."""

import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxvis.models.torchvision.common import avg_pool, max_pool


@pytest.mark.parametrize("pool, ref, settings", [(avg_pool, F.avg_pool2d, (3, 1, 1)),
                                                 (max_pool, F.max_pool2d, (3, 2, 1))])
def test_pooling_value_and_input_gradient_match_torch(pool, ref, settings):
    """Inception v3's 3x3/1 average pool (padding 1) and a strided max pool, differentiated under jit."""
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 3)).astype(np.float32)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    out = ref(t, *settings)
    w = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)  # NCHW, as torch's output
    (out * torch.from_numpy(w)).sum().backward()
    loss = lambda v: (pool(v, *settings) * jnp.asarray(w.transpose(0, 2, 3, 1))).sum()  # noqa: E731
    value, grad = fast_compile.jit(jax.value_and_grad(loss))(jnp.asarray(x))
    np.testing.assert_allclose(float(value), float((out * torch.from_numpy(w)).sum()), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), t.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
