#!/usr/bin/env bash
# Fills the git-ignored folders that scripts/device_run.sh needs on the device machine, which has no network
# and receives only the repository (64 MiB at most, tracked + untracked-not-ignored files + carried paths):
#
#   wheelhouse/       wheels (manylinux x86_64) of the Python packages magmasr needs and the device image may
#                     lack. The image (KINDS.md of the device tool, read 2026-11-17) has numpy, scipy,
#                     scikit-image, pybind11, scikit-build-core, safetensors, h5py, imageio, hypothesis and
#                     pytest-benchmark: these are fallbacks for a future image without them. device_run.sh
#                     installs only those the device's Python lacks.
#   devdata/shared/   the test data and weights from ../shared: data/{Set5,Set14,Vid4_Y,README.md} and
#                     weights/ (T91, training only, stays behind), for MAGMASR_SHARED on the device
#   devdata/googletest/  GoogleTest's source (from /usr/src/googletest) for a device image without it
#
# Python versions: the device's python3 was 3.12.3 in every reading so far (KINDS.md). Version-independent
# wheels (safetensors abi3, the pure-Python ones) serve any version; the
# per-version ones (h5py, hypothesis) are fetched for DEVICE_PYTHONS (default "3.12"). Each further version
# adds ~6.5 MB (measured: h5py 3.16.0 and hypothesis 6.170.17 for cp311 + cp313 = 13 MB; the pinned
# hypothesis has no cp310 wheel), so 3.10..3.13 would carry ~65 MiB in all, over the limit beside the data;
# since the image already has those packages, 3.12 alone is the safe choice.
#
# Usage: bash scripts/prepare_device_carry.sh [--no-download] [--no-data]
#   then: bash scripts/device_run.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
PYTHONS=${DEVICE_PYTHONS:-3.12}
SHARED=${MAGMASR_SHARED:-$(cd .. && pwd)/shared}
LIMIT_MIB=64
DOWNLOAD=1 DATA=1
for a in "$@"; do
  case "$a" in
    --no-download) DOWNLOAD=0 ;;
    --no-data) DATA=0 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done

{ git check-ignore -q wheelhouse/x.whl && git check-ignore -q devdata/x; } || {
  echo "wheelhouse/ and devdata/ must be git-ignored (.gitignore: /wheelhouse/ and /devdata/)" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------ wheels
# One version of each package: the one installed here where there is one (the versions the CPU tests
# pass with), else the newest that pip finds. Build requirements (scikit-build-core, pybind11) come too,
# in case a future image lacks them: they are pure Python and small.
PURE="safetensors imageio pytest-benchmark py-cpuinfo sortedcontainers attrs scikit-build-core pybind11 pathspec"
PERPY="h5py hypothesis"
pin() {  # NAME -> NAME==VERSION installed here, else NAME
  local v
  v=$("$PY" - "$1" <<'EOF' 2>/dev/null || true
import importlib.metadata as md, re, sys
want = re.sub(r"[-_.]+", "-", sys.argv[1]).lower()
for d in md.distributions():
    if re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() == want:
        print(d.version)
        break
EOF
)
  if [ -n "$v" ]; then echo "$1==$v"; else echo "$1"; fi
}
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
if [ "$DOWNLOAD" = 1 ]; then
  rm -rf wheelhouse; mkdir -p wheelhouse
  specs=(); for p in $PURE; do specs+=("$(pin "$p")"); done
  perpy=(); for p in $PERPY; do perpy+=("$(pin "$p")"); done
  dl() {  # python version, specs...
    local v=$1; shift
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version "$v" --implementation cp "${PLAT[@]}" -d wheelhouse "$@"
  }
  first=${PYTHONS%% *}
  echo "== version-independent wheels (checked against CPython $first)"
  dl "$first" "${specs[@]}"
  for v in $PYTHONS; do
    echo "== per-version wheels for CPython $v (manylinux x86_64)"
    for spec in "${perpy[@]}"; do
      # e.g. the pinned hypothesis has no cp310 wheel: warn, the device image has its own copy anyway
      dl "$v" "$spec" || echo "warning: no wheel of $spec for CPython $v"
    done
  done
  ls -1 wheelhouse
fi

# -------------------------------------------------------------------------------------------------- data
if [ "$DATA" = 1 ]; then
  [ -d "$SHARED/data" ] || { echo "no shared data at $SHARED (set MAGMASR_SHARED)" >&2; exit 1; }
  rm -rf devdata/shared; mkdir -p devdata/shared/data
  for d in Set5 Set14 Vid4_Y README.md; do cp -a "$SHARED/data/$d" devdata/shared/data/; done
  cp -a "$SHARED/weights" devdata/shared/weights
  if [ -d /usr/src/googletest/googletest ]; then
    # the top-level project and googletest/ without its tests, samples and docs (built with BUILD_GMOCK=OFF,
    # which leaves googlemock/ out)
    rm -rf devdata/googletest; mkdir -p devdata/googletest/googletest
    cp -a /usr/src/googletest/CMakeLists.txt devdata/googletest/
    for f in /usr/src/googletest/googletest/*; do
      case "${f##*/}" in test|samples|docs) ;; *) cp -a "$f" devdata/googletest/googletest/ ;; esac
    done
  else
    echo "no /usr/src/googletest here (apt-get install googletest): the device must have GoogleTest itself"
  fi
fi

# ------------------------------------------------------------------------------------------------- sizes
tree_kib=$(git ls-files -z -c -o --exclude-standard | du -ck --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
wh_kib=$(du -sk wheelhouse 2>/dev/null | cut -f1 || echo 0)
dd_kib=$(du -sk devdata 2>/dev/null | cut -f1 || echo 0)
total=$((tree_kib + ${wh_kib:-0} + ${dd_kib:-0}))
printf 'travels: working tree %d KiB + wheelhouse %d KiB + devdata %d KiB = %.1f MiB (limit %d MiB)\n' \
  "$tree_kib" "${wh_kib:-0}" "${dd_kib:-0}" "$(awk "BEGIN{print $total/1024}")" "$LIMIT_MIB"
du -sh devdata/shared/data/* devdata/shared/weights devdata/googletest 2>/dev/null | sed 's/^/  /'
if [ "$total" -gt $((LIMIT_MIB * 1024 - 2048)) ]; then
  echo "TOO LARGE: keep 2 MiB of margin under ${LIMIT_MIB} MiB (fewer DEVICE_PYTHONS, or less data)" >&2
  exit 1
fi
echo "ok: carry [\"wheelhouse\", \"devdata\"]; next: bash scripts/device_run.sh --dry-run"
