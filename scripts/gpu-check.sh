#!/usr/bin/env bash
# The GPU proof of svrt: one call that installs svrt offline, runs every CUDA and Triton test, times
# the Triton kernels, `svrt bench --device cuda` and the paper's restoration case, and writes it all as
# JSON under $OUT (default ./gpu-check-out), stopping cleanly at its own time limit.
#
#   bash scripts/gpu-check.sh                    # on the GPU machine (offline; 450 s in all)
#   bash scripts/gpu-check.sh --dry-run          # anywhere: plan every step, run the CPU-runnable ones small
#   bash scripts/gpu-check.sh --fetch-wheels     # here, with a package index: astropy wheels for the GPU machine
#
# Options: --time-limit S (default 450, install included), --only STEP[,STEP] (see
# benchmarks/gpu_check.py), --dry-run, --fetch-wheels. Environment: OUT (output folder),
# PYTHON (interpreter; default python3, or .venv/bin/python for --dry-run where it exists).
#
# The GPU machine has PyTorch, Triton and nvcc but no package index, and no astropy, which svrt
# imports to read and write bursts (the solver imports svrt.fileio). Wheels fetched here with
# --fetch-wheels into .gpu-wheels/ (ignored by git; name it in the device run's `carry`) are installed
# there with --no-index into a temporary folder; without them a stub astropy stands in (FITS I/O then
# fails, nothing here uses it) and versions say so.
set -uo pipefail

START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS="$ROOT/.gpu-wheels"
# astropy and the two packages it needs that the GPU image lacks (versions as in requirements-ci.txt's venv)
WHEEL_PINS=(astropy==8.0.2 pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.2.0.34.55)
DRY=0
FETCH=0
LIMIT=450
ONLY=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "gpu-check: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --fetch-wheels) FETCH=1 ;;
    --time-limit) [ $# -ge 2 ] || die "--time-limit needs a number of seconds."; LIMIT=$2; shift ;;
    --time-limit=*) LIMIT=${1#*=} ;;
    --only) [ $# -ge 2 ] || die "--only needs a comma-separated list of steps."; ONLY=$2; shift ;;
    --only=*) ONLY=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)." ;;
  esac
  shift
done
[[ "$LIMIT" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--time-limit takes seconds, got '$LIMIT'."

if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ "$DRY" = 1 ] && [ -x "$ROOT/.venv/bin/python" ]; then
  PY=$ROOT/.venv/bin/python
else
  PY=python3
fi

# ---------------------------------------------------------------- --fetch-wheels (on a machine with an index)
if [ "$FETCH" = 1 ]; then
  mkdir -p "$WHEELS"
  if ! git -C "$ROOT" check-ignore -q "$WHEELS" 2>/dev/null; then
    echo "/.gpu-wheels/" >> "$(git -C "$ROOT" rev-parse --git-path info/exclude)"
  fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "${WHEEL_PINS[@]}" || die "pip download of ${WHEEL_PINS[*]} failed."
  ls -la "$WHEELS"
  echo "gpu-check: wheels ready; carry .gpu-wheels in the device run."
  exit 0
fi

OUT_DIR=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT_DIR" || die "cannot create the output folder $OUT_DIR."
OUT_DIR=$(cd "$OUT_DIR" && pwd)
# this script's own files from an earlier run (nothing else in the folder is touched)
rm -f "$OUT_DIR"/{gpu-check.json,gpu-check.log,pytest.xml,restoration.json,kernels-bench.json,bench.json,bench.png}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/svrt-gpu-check.XXXXXX")
exec > >(tee -a "$OUT_DIR/gpu-check.log") 2>&1
export PYTHONUNBUFFERED=1

echo "gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ), $( [ "$DRY" = 1 ] && echo "dry run" || echo "GPU run"), limit ${LIMIT} s, python $PY, out $OUT_DIR"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader

write_failure() {  # the summary, when the driver cannot even start
  printf '{"schema": "svrt-gpu-check/1", "dry_run": %s, "ok": false, "error": "%s", "steps": {}}\n' \
    "$( [ "$DRY" = 1 ] && echo true || echo false)" "$1" > "$OUT_DIR/gpu-check.json"
  echo "gpu-check: $1" >&2
}

# ---------------------------------------------------------------- install (GPU run only; nothing is downloaded)
if [ "$DRY" = 0 ]; then
  export SVRT_GPU_CHECK_INSTALL=editable
  if ! (cd "$WORK" && "$PY" -c "import astropy" 2>/dev/null); then
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
      echo "gpu-check: installing $(ls "$WHEELS" | tr '\n' ' ')from .gpu-wheels (no index)"
      timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
        "$WHEELS"/*.whl \
        && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if ! (cd "$WORK" && "$PY" -c "import astropy.io.fits" 2>/dev/null); then
      echo "gpu-check: astropy is not installed here and no wheels came (bash scripts/gpu-check.sh --fetch-wheels," \
           "then carry .gpu-wheels): a stub stands in; FITS input/output will fail."
      mkdir -p "$WORK/stub/astropy/io"
      echo '"""Stub of astropy for the svrt GPU check: FITS I/O is unavailable."""' > "$WORK/stub/astropy/__init__.py"
      : > "$WORK/stub/astropy/io/__init__.py"
      printf '%s\n' 'def __getattr__(name):' \
        '    raise ImportError("astropy is not installed on this machine (svrt GPU check stub); FITS I/O is unavailable.")' \
        > "$WORK/stub/astropy/io/fits.py"
      export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$WORK/stub"
      export SVRT_GPU_CHECK_ASTROPY="stub (not installed; FITS I/O unavailable)"
    fi
  fi
  echo "gpu-check: pip install --no-deps --no-build-isolation --no-index -e . (offline, over this machine's torch)"
  if ! (cd "$ROOT" && timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e .); then
    # A setuptools too old for pyproject.toml: the same package layout as links, on PYTHONPATH.
    echo "gpu-check: pip install -e failed; svrt is put on PYTHONPATH as a tree of links instead."
    mkdir -p "$WORK/shim/svrt"
    for f in "$ROOT"/svrt/*; do ln -s "$f" "$WORK/shim/svrt/$(basename "$f")"; done
    for pkg in trainer export runtime kernels benchmarks; do ln -sfn "$ROOT/$pkg" "$WORK/shim/svrt/$pkg"; done
    export PYTHONPATH="$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
    export SVRT_GPU_CHECK_INSTALL="links on PYTHONPATH (pip install -e failed)"
  fi
fi

if ! (cd "$WORK" && "$PY" -c "import svrt.kernels, svrt.runtime.solver, svrt.benchmarks.gpu_check"); then
  write_failure "svrt does not import with $PY (see gpu-check.log)."
  exit 1
fi

# ---------------------------------------------------------------- the checks (the driver keeps to the limit)
NOW=$(date +%s)
LEFT=$(( ${LIMIT%.*} - (NOW - START) ))
ARGS=(--time-limit "$LIMIT" --started-at "$START" --out "$OUT_DIR" --repo "$ROOT")
[ "$DRY" = 1 ] && ARGS+=(--dry-run)
[ -n "$ONLY" ] && ARGS+=(--only "$ONLY")
# run from a neutral folder: in the repository root ./svrt would shadow the installed package's layout
(cd "$WORK" && timeout -s INT -k 10 $(( LEFT > 30 ? LEFT + 8 : 40 )) "$PY" -m svrt.benchmarks.gpu_check "${ARGS[@]}")
RC=$?
[ $RC -eq 124 ] && echo "gpu-check: the driver outran the time limit and was stopped." >&2
echo "gpu-check: exit $RC after $(( $(date +%s) - START )) s; files in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
rm -rf "$WORK"
exit $RC
