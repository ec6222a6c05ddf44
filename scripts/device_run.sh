#!/usr/bin/env bash
# The whole GPU check of magmasr in ONE call of the device machine (an H100, sm_90; issue 3):
#
#   env        what the machine has: GPU, driver, nvcc, cuDNN, compute-sanitizer, Python packages
#   deps       offline installs: the carried wheels that the Python lacks (into build/device-site, put on
#              PYTHONPATH; nothing is installed into the machine's own environment), and GoogleTest from the
#              carried source when the machine has none
#   build      C++ library + tests + cuDNN benchmark, CUDA for sm_90 (cmake -DMAGMASR_CUDA=ON
#              -DCMAKE_CUDA_ARCHITECTURES=90 -DMAGMASR_TESTS=ON -DMAGMASR_BENCH_CUDNN=ON)
#   ctest      every C++ test, the CUDA ones (tests/cpp/test_cuda_*.cpp) included
#   memcheck   compute-sanitizer --tool memcheck on magmasr_tests --gtest_filter='Cuda*:-*GemmChunking*'
#   pyinstall  pip install --no-build-isolation --no-deps . with MAGMASR_CUDA=ON MAGMASR_CUDA_ARCHS=90
#   pytest     the Python suite less the tests marked slow, GPU tests included, with the carried data
#              (MAGMASR_SHARED)
#   bench_conv bench_conv_cudnn (SRCNN shapes, then 3DSRnet shapes) -> $OUT/bench_conv.json, bench_conv.md
#   bench_srcnn benchmarks/bench_srcnn.py -> $OUT/bench_srcnn.json, bench_srcnn.md
#   pytest_slow the tests marked slow (CPU-heavy reproductions that CI runs too): last, so that they cannot
#              eat the benchmarks' time; pytest + pytest_slow are the whole suite
#
# A stage that fails is recorded and the next ones still run where they can (a stage whose input is missing,
# e.g. ctest after a failed build, is skipped); the script exits non-zero if any stage failed, timed out or
# was skipped. Each stage runs under `timeout` with a cap, shrunk so that the later stages keep their floor
# inside the whole budget (DEVICE_BUDGET_S, default 530 s: device commands are cut at 600 s). A short summary
# table is printed last (the tool returns only the tail of the output).
#
# What comes back in $OUT (at most 8 files): summary.md, logs.tar.gz (every stage's log, ctest/pytest JUnit
# XML, the build logs, env.txt), bench_conv.json, bench_conv.md, bench_srcnn.json, bench_srcnn.md.
#
# Before the call, on the machine without a GPU: bash scripts/prepare_device_carry.sh (fills the git-ignored
# wheelhouse/ and devdata/, checks the 64 MiB limit), then bash scripts/device_run.sh --dry-run.
# The call (the `run` tool of the device machine; command well under 2000 characters):
#
#   run(command="bash scripts/device_run.sh", carry=["wheelhouse", "devdata"], timeout_s=600)
#
# Files come back under the reply's files_at; commit the benchmark tables under docs/ with the card, the
# versions and the date (bench_*.json hold them).
#
# Usage: bash scripts/device_run.sh [--dry-run] [--local] [--cpu-only] [--stages a,b,...]
#   --dry-run   print the stages, budgets and commands and check what can be checked here; run nothing
#   --local     rehearse on a machine without a GPU: OUT defaults to out/device-local, the build dirs are
#               build/device-local*, GPU-only steps are skipped or exit early, GPU-test skips are allowed
#   --cpu-only  with --local: configure with MAGMASR_CUDA=OFF (default AUTO: CUDA compiled where nvcc is)
#   --stages    run only these stages (comma-separated names from the list above), e.g. --stages env,build
# Environment: OUT (device: set by the tool), DEVICE_BUDGET_S, JOBS, PYTHON (default python3), PYTEST_ARGS
# (default tests/python), DEVICE_CARRIED_GTEST=1 (build the carried GoogleTest even where one is installed).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

MODE=device
CPU_ONLY=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --local) [ "$MODE" = dry ] || MODE=local; LOCAL_REQ=1 ;;
    --cpu-only) CPU_ONLY=1 ;;
    --stages) ONLY=",${2:?--stages needs a list},"; shift ;;
    --stages=*) ONLY=",${1#--stages=},"; ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    *) echo "device_run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
LOCAL_REQ=${LOCAL_REQ:-0}
IS_LOCAL=$([ "$MODE" = local ] || [ "$LOCAL_REQ" = 1 ] && echo 1 || echo 0)

START=$(date +%s)
if [ "$IS_LOCAL" = 1 ]; then BUDGET=${DEVICE_BUDGET_S:-3000}; else BUDGET=${DEVICE_BUDGET_S:-530}; fi
DEADLINE=$((START + BUDGET))
JOBS=${JOBS:-$(nproc)}
PY=${PYTHON:-python3}
if [ "$IS_LOCAL" = 1 ]; then
  OUT=${OUT:-$ROOT/out/device-local}
  BUILD=${DEVICE_BUILD_DIR:-$ROOT/build/device-local}
  SITE=$ROOT/build/device-local-site
  WHEEL_BUILD=$ROOT/build/device-local-wheel
  CUDA_FLAG=$([ "$CPU_ONLY" = 1 ] && echo OFF || echo AUTO)
  EXPECT_GPU=0
else
  OUT=${OUT:-$ROOT/out/device-run}
  BUILD=${DEVICE_BUILD_DIR:-$ROOT/build/device-cuda}
  SITE=$ROOT/build/device-site
  WHEEL_BUILD=$ROOT/build/device-wheel
  CUDA_FLAG=ON
  EXPECT_GPU=1
fi
LOGS=$OUT/logs
SHARED_DATA=$ROOT/devdata/shared
[ -d "$SHARED_DATA" ] || SHARED_DATA=$(cd "$ROOT/.." && pwd)/shared  # a rehearsal beside ../shared

# stage table: name, cap (s), floor (s): the floor is what a stage is guaranteed to keep from the stages
# before it; the caps sum to more than the budget on purpose (few stages need their cap)
STAGES=(env deps build ctest memcheck pyinstall pytest bench_conv bench_srcnn pytest_slow)
declare -A CAP=([env]=30 [deps]=90 [build]=180 [ctest]=100 [memcheck]=110 [pyinstall]=180 [pytest]=200
                [bench_conv]=170 [bench_srcnn]=120 [pytest_slow]=200)
declare -A FLOOR=([env]=5 [deps]=10 [build]=40 [ctest]=25 [memcheck]=25 [pyinstall]=40 [pytest]=45
                  [bench_conv]=60 [bench_srcnn]=40 [pytest_slow]=30)
if [ "$IS_LOCAL" = 1 ]; then for s in "${STAGES[@]}"; do CAP[$s]=$((CAP[$s] * 5)); done; fi
declare -A NEEDS=([ctest]=build [memcheck]=build [bench_conv]=build [pytest]=pyinstall [bench_srcnn]=pyinstall
                  [pytest_slow]=pyinstall)
declare -A STATUS=() SECS=() GOT=()
RESERVE=12  # for the summary and the log archive

# ----------------------------------------------------------------------------------------------- probes
# Run once, here, quickly (no GPU work); their results feed the stages and the dry run.
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if ! command -v nvcc >/dev/null 2>&1 && [ -x "$CUDA_HOME/bin/nvcc" ]; then export PATH="$CUDA_HOME/bin:$PATH"; fi
NVCC=$(command -v nvcc || true)
[ -n "$NVCC" ] && export CUDACXX="$NVCC"

find_sanitizer() {
  local c
  c=$(command -v compute-sanitizer 2>/dev/null) && { echo "$c"; return; }
  for c in "$CUDA_HOME/bin/compute-sanitizer" "$CUDA_HOME/compute-sanitizer/compute-sanitizer" \
           /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
           /opt/nvidia/*/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer; do
    [ -x "$c" ] && [ -f "$c" ] && { echo "$c"; return; }
  done
  find /usr/local /opt -maxdepth 5 -name compute-sanitizer -type f -perm -u+x 2>/dev/null | head -n 1
}
SANITIZER=$(find_sanitizer)

# cuDNN: the toolkit's or the system's (CMake finds those itself), else the pip wheel of PyTorch's env
# (nvidia-cudnn-cu13: libcudnn.so.9 only, so both paths are given to CMake, and its lib dir to the loader)
CUDNN_ARGS="" CUDNN_WHERE=""
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME/targets/x86_64-linux/lib" /usr/lib/x86_64-linux-gnu /usr/local/lib; do
  if [ -e "$d/libcudnn.so" ]; then CUDNN_WHERE="$d (found by CMake)"; break; fi
done
if [ -z "$CUDNN_WHERE" ]; then
  PIPCUDNN=$("$PY" -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)
  if [ -n "$PIPCUDNN" ] && [ -e "$PIPCUDNN/include/cudnn.h" ]; then
    LIBCUDNN=$(ls "$PIPCUDNN"/lib/libcudnn.so* 2>/dev/null | sort | head -n 1)
    if [ -n "$LIBCUDNN" ]; then
      CUDNN_ARGS="-DCUDNN_LIBRARY=$LIBCUDNN -DCUDNN_INCLUDE_DIR=$PIPCUDNN/include"
      CUDNN_WHERE="$LIBCUDNN (pip nvidia-cudnn)"
      export LD_LIBRARY_PATH="$PIPCUDNN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
  fi
fi
[ -n "$CUDNN_WHERE" ] || CUDNN_WHERE="not found (bench_conv_cudnn will not be built)"

# GoogleTest: the system's, else built from the carried source (devdata/googletest) in the deps stage
GTEST_ARGS="" GTEST_WHERE=""
for f in /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake /usr/lib/cmake/GTest/GTestConfig.cmake \
         /usr/local/lib/cmake/GTest/GTestConfig.cmake /usr/local/lib64/cmake/GTest/GTestConfig.cmake; do
  [ -e "$f" ] && { GTEST_WHERE="system ($f)"; break; }
done
if [ -z "$GTEST_WHERE" ] && [ -e /usr/include/gtest/gtest.h ] && ls /usr/lib/x86_64-linux-gnu/libgtest.* /usr/lib/libgtest.* >/dev/null 2>&1; then
  GTEST_WHERE="system (FindGTest)"
fi
GTEST_PREFIX=$ROOT/build/device-gtest
[ "${DEVICE_CARRIED_GTEST:-0}" = 1 ] && GTEST_WHERE=""  # rehearse the device-without-GoogleTest path
if [ -z "$GTEST_WHERE" ]; then
  GTEST_ARGS="-DGTest_ROOT=$GTEST_PREFIX"
  if [ -d "$ROOT/devdata/googletest" ]; then GTEST_WHERE="built from devdata/googletest into $GTEST_PREFIX"
  else GTEST_WHERE="MISSING: no system GoogleTest and no devdata/googletest (run prepare_device_carry.sh)"; fi
fi

export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export MAGMASR_SHARED="$SHARED_DATA"
export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
export ROOT OUT LOGS BUILD SITE WHEEL_BUILD PY JOBS CUDA_FLAG EXPECT_GPU SANITIZER CUDNN_ARGS GTEST_ARGS GTEST_PREFIX NVCC

# ----------------------------------------------------------------------------------------------- stages
# Each runs in its own bash under `timeout`, its output in $LOGS/<name>.log.
stage_env() {
  echo "date: $(date -u +%FT%TZ)   host: $(hostname)   cores: $(nproc)"
  uname -a
  nvidia-smi 2>&1 | head -n 20 || echo "nvidia-smi: not available"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv 2>&1 || true
  echo "--- nvcc: ${NVCC:-none}"; [ -n "$NVCC" ] && "$NVCC" --version | tail -n 2
  echo "--- compute-sanitizer: ${SANITIZER:-none}"; [ -n "$SANITIZER" ] && "$SANITIZER" --version | tail -n 1
  echo "--- cmake: $(cmake --version | head -n 1); ninja: $(ninja --version 2>/dev/null || echo none)"
  echo "--- python: $(command -v "$PY") $("$PY" --version 2>&1)"
  "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|numpy|scipy|cupy|pybind11|scikit|safetensors|h5py|imageio|hypothesis|pytest|nvidia-cudnn|nvidia-cublas|nvidia-cuda-runtime)' || true
  "$PY" - <<'EOF' || true
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
          "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
except Exception as e:  # noqa: BLE001
    print("torch: not usable:", e)
EOF
  df -h "$ROOT" | tail -n 1; free -g | head -n 2
  [ "$EXPECT_GPU" = 1 ] && { nvidia-smi -L >/dev/null 2>&1 || { echo "no GPU visible"; return 1; }; }
  return 0
}

stage_deps() {
  local rc=0 missing
  if ls wheelhouse/*.whl >/dev/null 2>&1; then
    # distributions in wheelhouse/ that this Python lacks (names normalised as in PEP 503)
    missing=$("$PY" - wheelhouse <<'EOF'
import importlib.metadata as md, os, re, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
have = {norm(d.metadata["Name"] or "") for d in md.distributions()}
want = sorted({norm(f.split("-")[0]) for f in os.listdir(sys.argv[1]) if f.endswith(".whl")})
print(" ".join(w for w in want if w not in have))
EOF
)
    if [ -n "$missing" ]; then
      echo "installing from wheelhouse/ into $SITE: $missing"
      "$PY" -m pip install --no-index --no-deps --no-compile --disable-pip-version-check --find-links wheelhouse \
        --target "$SITE" --upgrade $missing || rc=1
    else
      echo "every package of wheelhouse/ is already installed"
    fi
  else
    echo "no wheelhouse/*.whl (run scripts/prepare_device_carry.sh before the call); relying on what is installed"
  fi
  if [ -n "$GTEST_ARGS" ]; then
    if [ -e "$GTEST_PREFIX/.done" ]; then
      echo "GoogleTest already built in $GTEST_PREFIX"
    elif [ -d devdata/googletest ]; then
      { cmake -S devdata/googletest -B build/device-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
          -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
          -DCMAKE_INSTALL_PREFIX="$GTEST_PREFIX" >/dev/null &&
        cmake --build build/device-gtest-build -j "$JOBS" &&
        cmake --install build/device-gtest-build >/dev/null && touch "$GTEST_PREFIX/.done"; } || rc=1
    else
      echo "no GoogleTest: neither the system's nor devdata/googletest"; rc=1
    fi
  fi
  return $rc
}

stage_build() {
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMAGMASR_CUDA="$CUDA_FLAG" \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DMAGMASR_TESTS=ON -DMAGMASR_BENCH_CUDNN=ON \
    -DPython_EXECUTABLE="$(command -v "$PY")" $CUDNN_ARGS $GTEST_ARGS || return 1
  cmake --build "$BUILD" -j "$JOBS" || return 1
  if [ "$CUDA_FLAG" = ON ] && [ ! -x "$BUILD/bench_conv_cudnn" ]; then
    echo "bench_conv_cudnn was not built (cuDNN not found?)"; return 1
  fi
  return 0
}

stage_ctest() {
  local j=$(( JOBS >= 8 ? 4 : 2 ))
  OMP_NUM_THREADS=$(( JOBS / j > 0 ? JOBS / j : 1 )) \
    ctest --test-dir "$BUILD" --output-on-failure -j "$j" --timeout 150 --output-junit "$LOGS/ctest.xml"
}

stage_memcheck() {
  if [ "$EXPECT_GPU" != 1 ]; then echo "no GPU expected here: memcheck not applicable"; return 75; fi
  [ -n "$SANITIZER" ] || { echo "compute-sanitizer not found"; return 1; }
  # --error-exitcode tells memcheck's findings apart from test failures (gtest exits 1). The GemmChunking
  # tests (hundreds of MiB, the same kernels as the small cases) are left to ctest: too slow under memcheck.
  "$SANITIZER" --tool memcheck --error-exitcode 99 --print-limit 200 \
    "$BUILD/magmasr_tests" --gtest_filter='Cuda*:-*GemmChunking*' --gtest_output="xml:$LOGS/memcheck_gtest.xml"
}

stage_pyinstall() {
  MAGMASR_CUDA=$CUDA_FLAG MAGMASR_CUDA_ARCHS=90 \
    "$PY" -m pip install --no-build-isolation --no-deps --no-compile --disable-pip-version-check \
    --target "$SITE" --upgrade -v -C build-dir="$WHEEL_BUILD" . || return 1
  cd /tmp && "$PY" - <<'EOF'
import os, magmasr
info = magmasr.build_info()
print("magmasr from", magmasr.__file__, info)
if os.environ.get("EXPECT_GPU") == "1":
    assert info["cuda_compiled"], "the package was built without CUDA"
    assert info["cuda_available"], "magmasr sees no GPU"
    import magmasr.cuda
    print("device:", magmasr.cuda.device_name(0))
EOF
}

run_pytest() {  # marker expression, JUnit file
  local extra="" rc
  "$PY" -c 'import pytest_timeout' 2>/dev/null && extra="--timeout=300"
  # PYTEST_ARGS (default: the whole suite, tests/python) narrows a local rehearsal on a small machine
  "$PY" -m pytest ${PYTEST_ARGS:-tests/python} -m "$1" -q -p no:cacheprovider -rfE --durations=15 $extra \
    --junitxml="$LOGS/$2" -o junit_family=xunit1
  rc=$?
  [ "$rc" = 5 ] && { echo "(no test selected)"; return 0; }
  return $rc
}
stage_pytest() { run_pytest "not slow" pytest.xml; }
stage_pytest_slow() { run_pytest "slow" pytest_slow.xml; }

stage_bench_conv() {
  [ -x "$BUILD/bench_conv_cudnn" ] || { echo "no $BUILD/bench_conv_cudnn"; return 1; }
  local rc=0 g pct mrc
  # two groups, each under its own share of the stage's budget, so that one that runs long still leaves
  # the other's results (the tables are also printed row by row into this log)
  for g in SRCNN 3DSRnet; do
    pct=45; [ "$g" = 3DSRnet ] && pct=50
    timeout -k 5 $(( ${STAGE_BUDGET:-170} * pct / 100 )) \
      "$BUILD/bench_conv_cudnn" "$LOGS/bench_conv_$g.json" --reps 50 --only "$g" || rc=1
  done
  "$PY" - "$LOGS" "$OUT" <<'EOF'; mrc=$?
import json, os, sys
logs, out = sys.argv[1:3]
groups = ("SRCNN", "3DSRnet")
parts = [os.path.join(logs, f"bench_conv_{g}.json") for g in groups]
parts = [json.load(open(p)) for p in parts if os.path.exists(p)]
if not parts:
    print("no bench_conv JSON (no GPU, or both groups failed)")
    sys.exit(75 if os.environ.get("EXPECT_GPU") != "1" else 1)
merged = {k: v for k, v in parts[0].items() if k != "results"}
merged["results"] = [r for p in parts for r in p["results"]]
merged["groups"] = len(parts)
merged["complete"] = len(parts) == len(groups) and all(p.get("complete", True) for p in parts)
json.dump(merged, open(os.path.join(out, "bench_conv.json"), "w"), indent=1)
# Markdown: per shape and direction, cuDNN vs our auto, and the best of our strategies
rows = {}
for r in merged["results"]:
    rows.setdefault((r["shape"], r["direction"]), {})[r["impl"]] = r
lines = [f"# magmasr conv vs cuDNN {merged.get('cudnn_version')} on {merged.get('device')}, "
         f"{merged.get('precision')}, {merged.get('statistic')}, {merged.get('reps')} runs"
         + ("" if merged["complete"] else " (cut short: only the rows that finished)"), "",
         "| layer | direction | cuDNN ms | direct ms | direct_async ms | implicit_gemm ms | gemm ms | auto ms | "
         "auto TFLOP/s | cuDNN/auto | rel err |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for (shape, d), m in rows.items():
    c = next((v for k, v in m.items() if k.startswith("cudnn")), None)
    g = lambda k: m.get("magmasr " + k, {}).get("ms", float("nan"))  # noqa: E731
    a = m.get("magmasr auto", {})
    ratio = c["ms"] / a["ms"] if c and a.get("ms") else float("nan")
    lines.append(f"| {shape} | {d} | {c['ms'] if c else float('nan'):.3f} | {g('direct'):.3f} | "
                 f"{g('direct_async'):.3f} | {g('implicit_gemm'):.3f} | {g('gemm'):.3f} | "
                 f"{a.get('ms', float('nan')):.3f} | {a.get('tflops', float('nan')):.2f} | {ratio:.2f} | "
                 f"{a.get('rel_err_vs_cudnn', float('nan')):.1e} |")
open(os.path.join(out, "bench_conv.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
  [ "$mrc" = 75 ] && [ "$rc" = 0 ] && return 75  # nothing to time here (no GPU): not applicable
  [ "$mrc" = 0 ] || rc=1
  return $rc
}

stage_bench_srcnn() {
  # without a GPU the benchmark says so and exits 0 without writing anything: not applicable
  "$PY" benchmarks/bench_srcnn.py "$OUT/bench_srcnn.json" --markdown "$OUT/bench_srcnn.md" --device cuda \
    --reps 50 --warmup 5 || return 1
  [ -e "$OUT/bench_srcnn.json" ] || { [ "$EXPECT_GPU" = 1 ] && return 1 || return 75; }
}
export -f stage_env stage_deps stage_build stage_ctest stage_memcheck stage_pyinstall run_pytest stage_pytest \
  stage_bench_conv stage_bench_srcnn stage_pytest_slow

describe() {
  case "$1" in
    env) echo "probe GPU/driver/toolchain/packages -> logs/env.log" ;;
    deps) echo "pip install --no-index --find-links wheelhouse --target $SITE <missing>; GoogleTest: $GTEST_WHERE" ;;
    build) echo "cmake -S . -B $BUILD -G Ninja -DMAGMASR_CUDA=$CUDA_FLAG -DCMAKE_CUDA_ARCHITECTURES=90 -DMAGMASR_TESTS=ON -DMAGMASR_BENCH_CUDNN=ON $CUDNN_ARGS $GTEST_ARGS && cmake --build $BUILD -j $JOBS" ;;
    ctest) echo "ctest --test-dir $BUILD --output-on-failure -j N --output-junit logs/ctest.xml" ;;
    memcheck) echo "${SANITIZER:-compute-sanitizer(NOT FOUND)} --tool memcheck --error-exitcode 99 $BUILD/magmasr_tests --gtest_filter='Cuda*:-*GemmChunking*'" ;;
    pyinstall) echo "MAGMASR_CUDA=$CUDA_FLAG MAGMASR_CUDA_ARCHS=90 $PY -m pip install --no-build-isolation --no-deps --target $SITE ." ;;
    pytest) echo "MAGMASR_SHARED=$SHARED_DATA $PY -m pytest ${PYTEST_ARGS:-tests/python} -m 'not slow' --junitxml=logs/pytest.xml" ;;
    pytest_slow) echo "MAGMASR_SHARED=$SHARED_DATA $PY -m pytest ${PYTEST_ARGS:-tests/python} -m slow --junitxml=logs/pytest_slow.xml" ;;
    bench_conv) echo "$BUILD/bench_conv_cudnn logs/bench_conv_{SRCNN,3DSRnet}.json --reps 50 --only {SRCNN,3DSRnet} -> \$OUT/bench_conv.json, bench_conv.md" ;;
    bench_srcnn) echo "$PY benchmarks/bench_srcnn.py \$OUT/bench_srcnn.json --markdown \$OUT/bench_srcnn.md --device cuda" ;;
  esac
}

selected() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }

# ------------------------------------------------------------------------------------------------ dry run
if [ "$MODE" = dry ]; then
  echo "device_run.sh --dry-run: mode $([ "$LOCAL_REQ" = 1 ] && echo local || echo device), budget ${BUDGET}s, jobs $JOBS"
  echo "  OUT=$OUT  build=$BUILD  site=$SITE  MAGMASR_SHARED=$SHARED_DATA"
  echo "  nvcc: ${NVCC:-NOT FOUND}   compute-sanitizer: ${SANITIZER:-not found here}"
  echo "  cuDNN: $CUDNN_WHERE"
  echo "  GoogleTest: $GTEST_WHERE"
  problems=0
  n=$(ls wheelhouse/*.whl 2>/dev/null | wc -l)
  echo "  wheelhouse/: $n wheels$([ "$n" -gt 0 ] && echo ", $(du -sh wheelhouse | cut -f1)")"
  for d in data/Set5 data/Set14 data/Vid4_Y weights/srcnn_official weights/3dsrnet_official; do
    [ -d "$ROOT/devdata/shared/$d" ] || { echo "  PROBLEM: devdata/shared/$d missing"; problems=1; }
  done
  [ -d "$ROOT/devdata" ] && echo "  devdata/: $(du -sh "$ROOT/devdata" | cut -f1)"
  { git check-ignore -q wheelhouse/x.whl && git check-ignore -q devdata/x; } || { echo "  PROBLEM: wheelhouse/ or devdata/ is not git-ignored"; problems=1; }
  [ -f benchmarks/bench_srcnn.py ] || { echo "  PROBLEM: benchmarks/bench_srcnn.py missing"; problems=1; }
  acc=0
  for s in "${STAGES[@]}"; do
    selected "$s" || continue
    acc=$((acc + FLOOR[$s]))
    printf '  %-12s cap %4ss floor %3ss  %s\n' "$s" "${CAP[$s]}" "${FLOOR[$s]}" "$(describe "$s")"
  done
  echo "  floors sum to ${acc}s of the ${BUDGET}s budget (reserve ${RESERVE}s for the summary)"
  [ "$acc" -le $((BUDGET - RESERVE)) ] || { echo "  PROBLEM: floors exceed the budget"; problems=1; }
  echo "  call: run(command=\"bash scripts/device_run.sh\", carry=[\"wheelhouse\", \"devdata\"], timeout_s=600)"
  bash -n "$0" && echo "  bash -n: ok"
  [ "$problems" = 0 ] && echo "dry run: ready" || echo "dry run: NOT ready (see PROBLEM lines)"
  exit "$problems"
fi

# ------------------------------------------------------------------------------------------------- run
rm -rf "$LOGS"; mkdir -p "$LOGS" "$SITE"
rm -f "$OUT"/summary.md "$OUT"/logs.tar.gz "$OUT"/bench_conv.json "$OUT"/bench_conv.md "$OUT"/bench_srcnn.json "$OUT"/bench_srcnn.md
echo "device_run.sh: mode $MODE, budget ${BUDGET}s, jobs $JOBS, OUT=$OUT"

later_floors() {  # sum of the floors of the selected stages after $1
  local past=0 sum=0 s
  for s in "${STAGES[@]}"; do
    if [ "$past" = 1 ] && selected "$s"; then sum=$((sum + FLOOR[$s])); fi
    [ "$s" = "$1" ] && past=1
  done
  echo "$sum"
}

run_stage() {
  local s=$1 now budget t0 rc need
  need=${NEEDS[$s]:-}
  if [ -n "$need" ] && [ -n "${STATUS[$need]:-}" ] && [ "${STATUS[$need]}" != ok ]; then
    STATUS[$s]="skipped (needs $need)"; SECS[$s]=0; GOT[$s]=0
    printf '== %-11s skipped: %s did not succeed\n' "$s" "$need"; return
  fi
  now=$(date +%s)
  budget=$((DEADLINE - now - RESERVE - $(later_floors "$s")))
  [ "$budget" -gt "${CAP[$s]}" ] && budget=${CAP[$s]}
  if [ "$budget" -lt 5 ]; then
    STATUS[$s]="skipped (no time)"; SECS[$s]=0; GOT[$s]=0
    printf '== %-11s skipped: no time left\n' "$s"; return
  fi
  printf '== %-11s start (budget %ss, %ss into the run)\n' "$s" "$budget" "$((now - START))"
  t0=$(date +%s)
  STAGE_BUDGET=$budget timeout -k 10 "$budget" bash -c "stage_$s" >"$LOGS/$s.log" 2>&1
  rc=$?
  SECS[$s]=$(( $(date +%s) - t0 )); GOT[$s]=$budget
  case $rc in
    0) STATUS[$s]=ok ;;
    75) STATUS[$s]="n/a here" ;;
    124|137) STATUS[$s]="TIMEOUT" ;;
    *) STATUS[$s]="FAIL (rc $rc)" ;;
  esac
  printf '== %-11s %s in %ss\n' "$s" "${STATUS[$s]}" "${SECS[$s]}"
  if [ "$rc" != 0 ] && [ "$rc" != 75 ]; then tail -n 15 "$LOGS/$s.log" | sed 's/^/   | /'; fi
  printf '%s\t%s\t%s\t%s\n' "$s" "${STATUS[$s]}" "${SECS[$s]}" "$budget" >>"$LOGS/stages.tsv"
}

for s in "${STAGES[@]}"; do
  selected "$s" && run_stage "$s"
done

# ----------------------------------------------------------------------------------------------- summary
"$PY" - "$LOGS" "$OUT" "$EXPECT_GPU" "$(( $(date +%s) - START ))" <<'EOF' > "$OUT/summary.md" 2>"$LOGS/summary.err"
import json, os, re, sys
import xml.etree.ElementTree as ET
logs, out, expect_gpu, elapsed = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
stages = [l.rstrip("\n").split("\t") for l in open(os.path.join(logs, "stages.tsv"))] if os.path.exists(
    os.path.join(logs, "stages.tsv")) else []

def junit(path, gpu_test):
    """passed, failed, skipped, GPU tests skipped."""
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    p = f = s = gs = 0
    for tc in root.iter("testcase"):
        tags = {c.tag for c in tc}
        if tags & {"failure", "error"} or tc.get("status") == "fail":
            f += 1
        elif "skipped" in tags or tc.get("status") in ("notrun", "disabled"):
            s += 1
            sk = next((c for c in tc if c.tag == "skipped"), None)
            if gpu_test(tc, (sk.get("message", "") + (sk.text or "")) if sk is not None else ""):
                gs += 1
        else:
            p += 1
    return p, f, s, gs

detail, flags = {}, []
r = junit(os.path.join(logs, "ctest.xml"), lambda tc, m: tc.get("name", "").startswith("Cuda"))
if r:
    detail["ctest"] = f"{r[0]} passed, {r[1]} failed, {r[2]} skipped" + (f" ({r[3]} CUDA tests skipped)" if r[3] else "")
    if expect_gpu and r[3]:
        flags.append(f"ctest: {r[3]} CUDA tests skipped on the GPU machine")
for st in ("pytest", "pytest_slow"):
    r = junit(os.path.join(logs, st + ".xml"), lambda tc, m: "GPU" in m or "cuda" in m.lower())
    if r:
        detail[st] = f"{r[0]} passed, {r[1]} failed, {r[2]} skipped" + (f" ({r[3]} GPU tests skipped)" if r[3] else "")
        if expect_gpu and r[3]:
            flags.append(f"{st}: {r[3]} GPU tests skipped on the GPU machine")
mlog = os.path.join(logs, "memcheck.log")
t = open(mlog, errors="replace").read() if os.path.exists(mlog) else ""
if "[==========]" in t or "COMPUTE-SANITIZER" in t:
    ok = len(re.findall(r"^\[       OK \]", t, re.M))
    bad = len(re.findall(r"^\[  FAILED  \] \S+ \(", t, re.M))
    summ = re.findall(r"ERROR SUMMARY: (\d+) error", t)
    errs = summ[-1] if summ else f">= {len(re.findall(r'^========= (Invalid|Program hit|Uninitialized|Leaked|Race)', t, re.M))} (no summary: cut short?)"
    detail["memcheck"] = f"{ok} tests ok, {bad} failed, sanitizer errors: {errs}"
rows = []
for s, status, secs, budget in stages:
    rows.append(f"| {s} | {status} | {secs} / {budget} | {detail.get(s, '')} |")

bench = []
p = os.path.join(out, "bench_conv.json")
if os.path.exists(p):
    d = json.load(open(p))
    by = {}
    for r in d["results"]:
        by.setdefault((r["shape"], r["direction"]), {})[r["impl"].split(" ")[0] if r["impl"].startswith("cudnn") else r["impl"]] = r
    for (shape, direction), m in by.items():
        c, a = m.get("cudnn"), m.get("magmasr auto")
        if c and a and a["ms"] > 0:
            bench.append(f"| conv {shape} | {direction} | {c['ms']:.3f} | {a['ms']:.3f} | {c['ms'] / a['ms']:.2f} | {a['rel_err_vs_cudnn']:.1e} |")
p = os.path.join(out, "bench_srcnn.json")
if os.path.exists(p):
    d = json.load(open(p))
    ours = {r["case"]: r["median_ms"] for r in d["results"] if r["impl"] == "magmasr"}
    for r in d["results"]:
        if r["impl"] != "magmasr" and r["case"] in ours:
            bench.append(f"| SRCNN {r['case']} | vs {r['impl']} | {r['median_ms']:.3f} | {ours[r['case']]:.3f} | "
                         f"{r['median_ms'] / ours[r['case']]:.2f} | |")
    if not d.get("all_checks_pass", True):
        flags.append("bench_srcnn: a correctness check failed (see bench_srcnn.md)")

print(f"# device_run summary ({elapsed} s)\n")
print("| stage | status | s used / budget | tests |\n|---|---|---|---|")
print("\n".join(rows))
if bench:
    print("\n| benchmark | direction / against | their ms | our ms | their/our (>1: we win) | rel err |")
    print("|---|---|---|---|---|---|")
    print("\n".join(bench))
for f in flags:
    print(f"\nFLAG: {f}")
sys.exit(1 if flags else 0)
EOF
SUMRC=$?
[ -s "$LOGS/summary.err" ] && { echo "(summary script: $(tail -n 3 "$LOGS/summary.err"))"; }

# one archive for the logs (the tool brings back at most 8 files)
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs 2>/dev/null && rm -rf "$LOGS"

FAILED=0
for s in "${STAGES[@]}"; do
  selected "$s" || continue
  case "${STATUS[$s]:-}" in ok) ;; "n/a here") [ "$EXPECT_GPU" = 1 ] && FAILED=1 ;; *) FAILED=1 ;; esac
done
[ "$SUMRC" = 0 ] || FAILED=1
echo
cat "$OUT/summary.md"
echo
echo "device_run.sh: $([ "$FAILED" = 0 ] && echo 'all stages ok' || echo 'SOME STAGES FAILED'); files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit "$FAILED"
