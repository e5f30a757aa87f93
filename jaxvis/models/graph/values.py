"""The executor's values: a tensor and its storage layout, and the helpers every op family shares.

Contract: the graph has NCHW semantics (see `ir`), the activations are channels-last. A `V` carries
its `data` and a flag: `cl` values are 4-D NCHW tensors stored NHWC, the others are stored as the
source framework has them. `plain` gives the source's tensor, `channels_last` a 4-D value as NHWC
(free for `cl` values), `to_output` what a layer returns; `storage_axis` maps a source axis to its
axis in the storage. Elementwise results stay `cl` when an operand is (a small plain operand such
as a [C,1,1] buffer is broadcast into NHWC).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

__all__ = ["SEM_TO_PHYS", "Ctx", "V", "as_cl_operand", "axis_index", "channels_last", "elementwise", "optional",
           "plain", "same_storage", "storage_axis", "to_output"]

SEM_TO_PHYS = (0, 3, 1, 2)  # NCHW axis -> its axis in the NHWC storage of a cl value


class V(NamedTuple):
    """A value: `data`, and `cl` when it is a 4-D NCHW tensor stored NHWC."""

    data: Any
    cl: bool = False


class Ctx(NamedTuple):
    mode: Any = 0.0  # relu_redirect
    impl: str = "auto"  # conv formulation


def plain(v: V):
    """The value as the source framework has it."""
    return jnp.transpose(v.data, (0, 3, 1, 2)) if v.cl else v.data


def channels_last(v: V):
    """A 4-D value as NHWC."""
    if v.cl:
        return v.data
    if jnp.ndim(v.data) != 4:
        raise ValueError(f"needs a 4-D NCHW tensor, got shape {tuple(jnp.shape(v.data))}")
    return jnp.transpose(v.data, (0, 2, 3, 1))


def to_output(v: V, *, channels_first: bool = True):
    """What a layer returns: NHWC for 4-D values of a channels-first graph, the source's tensor otherwise."""
    if v.cl:
        return v.data
    return jnp.transpose(v.data, (0, 2, 3, 1)) if channels_first and jnp.ndim(v.data) == 4 else v.data


def as_cl_operand(a):
    """An elementwise operand broadcast against NHWC storage (numbers stay numbers)."""
    if not isinstance(a, V):
        return a
    if a.cl:
        return a.data
    x = jnp.asarray(a.data)
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return jnp.transpose(x, (0, 2, 3, 1))


def axis_index(axis: int, rank: int) -> int:
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def storage_axis(axis: int, v: V) -> int:
    """Storage axis of NCHW axis `axis` of `v`."""
    axis = axis_index(axis, jnp.ndim(v.data))
    return SEM_TO_PHYS[axis] if v.cl else axis



def elementwise(fn: Callable, *args) -> V:
    tensors = [a for a in args if isinstance(a, V)]
    rank = max(jnp.ndim(a.data) for a in tensors)
    if rank == 4 and any(a.cl for a in tensors):
        return V(fn(*[as_cl_operand(a) for a in args]), True)
    return V(fn(*[plain(a) if isinstance(a, V) else a for a in args]), False)



def optional(args, i):
    return args[i].data if len(args) > i and args[i] is not None else None



def same_storage(args):
    """Tensors in one storage: NHWC if all are 4-D and one is, else the source's."""
    if all(jnp.ndim(a.data) == 4 for a in args) and any(a.cl for a in args):
        return [channels_last(a) for a in args], True
    return [plain(a) for a in args], False
