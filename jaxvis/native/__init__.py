"""The C++ extension from Python: host-side image kernels for NumPy batches (`kernels`) and the XLA
FFI custom calls that jitted code emits on CPU (`custom_calls`).

`jaxvis.native.resize_bicubic` and friends are the kernels, re-exported; `jaxvis._core` (the
compiled module) is imported on first use, so importing this package never needs the build.
"""

from jaxvis.native.kernels import MODES, box_blur, gaussian_blur, jitter, resize_bicubic

__all__ = ["MODES", "box_blur", "gaussian_blur", "jitter", "resize_bicubic"]
