"""How fast a render runs here: filters per second, compile time, GFLOP per step and the share of
the device's dot peak that the render step reaches.

Contract: `bench(spec, layer, config)` renders one chunk of `config.batch` filters of `layer` twice
(the first run compiles, the second is timed warm) and returns a `BenchResult`; `dot_peak(dtype)`
measures the device's dense matmul rate in GFLOP/s, the practical ceiling a conv-heavy step is
compared with. The GFLOP count is XLA's own (`cost_analysis` of one compiled optimization step).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.models.spec import ModelSpec
from jaxvis.optvis.compile_cache import CompileClock
from jaxvis.optvis.objectives import as_objective
from jaxvis.optvis.render import (
    PRECISIONS,
    RenderConfig,
    _init_params,
    _optimize_octave,
    check_objective,
    render,
    render_rng,
)

__all__ = ["BenchResult", "bench", "dot_peak", "step_flops"]


@dataclasses.dataclass(frozen=True)
class BenchResult:
    model: str
    layer: str
    batch: int
    size: int
    steps: int
    precision: str
    device: str
    filters_per_s: float  # warm: compiled programs reused
    compile_s: float  # tracing + lowering + XLA compile of the first run
    first_run_s: float  # the first run, compilation included
    gflop_per_step: float  # XLA's count for one optimization step of the whole batch, final octave size
    gflop_per_s: float
    dot_peak_gflop_per_s: float
    fraction_of_peak: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def dot_peak(dtype=jnp.float32, *, size: int | None = None, repeats: int = 5) -> float:
    """The device's dense matmul rate in GFLOP/s (median of `repeats` jitted `size`^2 products)."""
    size = size or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def step_flops(spec: ModelSpec, layer: str, config: RenderConfig, size: int) -> float:
    """XLA's FLOP count of one optimization step of a batch of `size` x `size` images."""
    objective = as_objective(layer)
    one = dataclasses.replace(config, steps=1)
    keys = jax.random.split(jax.random.PRNGKey(0), one.batch)
    params = jax.eval_shape(lambda k: _init_params(k, spec=spec, config=one, size=size), keys)
    with render_rng():  # traced as render traces it
        lowered = _optimize_octave.lower(spec.variables, params, jnp.zeros(one.batch, jnp.int32), keys,
                                         first_step=one.relu_redirect_steps, spec=spec, objective=objective,
                                         config=one)
    analysis = lowered.compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float((analysis or {}).get("flops", 0.0))


def bench(spec: ModelSpec, layer: str, config: RenderConfig, *, peak: float | None = None) -> BenchResult:
    """Render `config.batch` filters of `layer` cold, then warm; see the module docstring."""
    config.validate()
    units = np.arange(config.batch)
    check_objective(spec, as_objective(layer), units, config.octave_sizes()[0])
    start = time.perf_counter()
    with CompileClock() as clock:
        render(spec, layer, units, config, progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    render(spec, layer, units, config, progress=False)
    warm = time.perf_counter() - start
    sizes = config.octave_sizes()
    flops = {size: step_flops(spec, layer, config, size) for size in set(sizes)}
    gflop_per_s = sum(flops[size] for size in sizes) * config.steps / warm / 1e9
    peak = peak if peak is not None else dot_peak(PRECISIONS[config.precision])
    return BenchResult(
        model=spec.name,
        layer=layer,
        batch=config.batch,
        size=config.size,
        steps=config.steps,
        precision=config.precision,
        device=str(jax.devices()[0].device_kind),
        filters_per_s=config.batch / warm,
        compile_s=clock.compile_seconds,
        first_run_s=first,
        gflop_per_step=flops[sizes[-1]] / 1e9,
        gflop_per_s=gflop_per_s,
        dot_peak_gflop_per_s=peak,
        fraction_of_peak=gflop_per_s / peak if peak else 0.0,
    )
