#!/usr/bin/env bash
# Installs magmasr with its test dependencies and runs every test: the C++ unit tests (ctest) and the
# Python suite (pytest). GPU tests skip cleanly without a GPU; data tests skip without ../shared.
# Usage: bash scripts/run_tests.sh            (MAGMASR_CUDA=OFF for a CPU-only build)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
BUILD=${MAGMASR_TEST_BUILD_DIR:-build/ctest}

echo "== C++: configure, build, ctest ($BUILD)"
cmake -S . -B "$BUILD" -G Ninja -DMAGMASR_CUDA="${MAGMASR_CUDA:-AUTO}" -DMAGMASR_TESTS=ON >/dev/null
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS"

echo "== Python: install magmasr[test] and run pytest"
"$PY" -m pip install --quiet ".[test]"
"$PY" -m pytest tests/python -q -p no:cacheprovider "$@"
