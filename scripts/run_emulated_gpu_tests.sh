#!/usr/bin/env bash
# Runs the tests of the CUDA backend without a GPU: the backend's kernels and host code built against the CPU
# emulator of tests/cuda_emu (-DMAGMASR_CUDA=EMULATE), then every C++ test and every Python test marked `gpu`
# (or using the `gpu` fixture) and not `slow` on the emulated device "cuda:0". It checks what the kernels compute, not how
# fast: a real GPU run is scripts/device_run.sh. CI runs this; it takes a few minutes on 2 cores.
# Usage: bash scripts/run_emulated_gpu_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
BUILD=${MAGMASR_EMU_BUILD_DIR:-build/emu}
PYDIR=${MAGMASR_EMU_PY_DIR:-build/emu-py}

echo "== C++: configure, build and ctest with the emulated CUDA backend ($BUILD)"
cmake -S . -B "$BUILD" -G Ninja -DMAGMASR_CUDA=EMULATE -DMAGMASR_TESTS=ON >/dev/null
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS"

echo "== Python: the package with the emulated CUDA backend ($PYDIR), and its gpu tests"
rm -rf "$PYDIR"
"$PY" -m pip install --quiet --no-build-isolation --no-deps --target "$PYDIR" \
  --config-settings=cmake.define.MAGMASR_CUDA=EMULATE --config-settings=build-dir="$BUILD-py" .
PYTHONPATH="$PYDIR" "$PY" -c "import magmasr; assert magmasr.cuda_available(), 'the emulated device is missing'; \
print('device:', magmasr.cuda.device_name(0))"
# The slow-marked gpu tests (whole benchmark pictures through a network) are for a real GPU: minutes here.
PYTHONPATH="$PYDIR" "$PY" -m pytest tests/python -m "gpu and not slow" -q -p no:cacheprovider "$@"
