"""Private C++ image kernels (csrc/). Use `jaxvis.native`, which validates inputs.

All take and return C-contiguous float32 NHWC arrays (no conversion is done);
`num_threads=0` uses every available core. Misuse raises ValueError / TypeError.
"""

import numpy as np
import numpy.typing as npt

def jitter(
    images: npt.NDArray[np.float32],
    shifts: npt.NDArray[np.int32],
    mode: str,
    cval: float,
    num_threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def box_blur(
    images: npt.NDArray[np.float32], ksize_h: int, ksize_w: int, num_threads: int = 0
) -> npt.NDArray[np.float32]: ...
def gaussian_blur(
    images: npt.NDArray[np.float32], sigma: float, ksize: int = 0, num_threads: int = 0
) -> npt.NDArray[np.float32]: ...
def resize_bicubic(
    images: npt.NDArray[np.float32], out_h: int, out_w: int, num_threads: int = 0
) -> npt.NDArray[np.float32]: ...
def gaussian_ksize_for_sigma(sigma: float) -> int: ...
def oihw_to_hwio(
    kernel: npt.NDArray[np.float32], out: npt.NDArray[np.float32], num_threads: int = 0
) -> None: ...
def available_cores() -> int: ...
def warp_ffi_handlers() -> dict[str, object]:
    """XLA FFI handler capsules {"forward", "backward"} of the render step's warp on CPU; {} when
    the extension was built without XLA's FFI headers. Registered by `jaxvis.transforms`."""
    ...
