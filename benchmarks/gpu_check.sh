#!/usr/bin/env bash
# GPU check: on a GPU machine with no network and no TensorFlow, run in ONE call the
# benchmark with mixed precision (benchmarks/speed.py: training/inference throughput and the
# whole 15-epoch protocol measured in full), the unit tests that matter for training and the
# `sample` profile, on Keras 3 over JAX and PyTorch; everything lands under $OUT.
# Goals on an H100/H200: ResNet50 training >= 2,000 images/s at batch 32; the whole paper
# protocol (three models, 800 + 100 + 100 images, 15 epochs) under a minute.
#
# Step 1, here (needs pip's index and ../shared/data; about 10 s):
#     bash benchmarks/gpu_check.sh prepare
#   Downloads the wheels the GPU machine lacks (Keras, ImageHash, papermill, the Jupyter
#   kernel; CPython 3.12; the versions requirements.txt pins) into .whl/, copies 500 real
#   images per class into .gpu_data/ (byte for byte; the source is only read), adds both
#   folders to .git/info/exclude, checks that every wheel's requirements are packed or on the
#   GPU machine and that what travels stays under 64 MiB (about 54 MiB).
# Step 2, one `run` call of the workplace's `device` tool, exactly:
#     command:   bash benchmarks/gpu_check.sh device
#     carry:     [".whl", ".gpu_data"]
#     timeout_s: 450
#   Read summary.json first (per step: status, seconds; the goal figures), then gpu_check.log,
#   speed.json, speed_compare.json, pytest.log, sample_run.json, sample_results.tar.gz (7 files;
#   the tool returns at most 8). Rerun part of it with e.g. GPU_CHECK_STEPS="speed" in front.
#
# Steps and their caps on the GPU, seconds (each under `timeout`; the whole run under
# GPU_CHECK_BUDGET_S=390; a step that fails or runs out of time is recorded, the next one runs):
#   install+probe 20 | speed 170 (JAX: compiled, the fastest once warm; throughput first, then
#   the protocol, JSON saved after every row) | compare 70 (the same on PyTorch, which compiles
#   nothing) | pytest 50 | sample 55 (tests and notebooks on PyTorch: JAX's compilation of
#   every new model would not fit the budget). Mixed precision: auto, on when Keras sees a GPU.
#
# Knobs: GPU_CHECK_BACKEND (benchmark, jax), GPU_CHECK_COMPARE_BACKEND (the other one),
# GPU_CHECK_TEST_BACKEND (pytest and sample, torch), GPU_CHECK_STEPS, GPU_CHECK_BUDGET_S,
# GPU_CHECK_CAPS (e.g. "speed=240 pytest=90"), GPU_CHECK_TEST_TIMEOUT (per test, 60 s),
# GPU_CHECK_PYTHON (python3), GPU_CHECK_WHEELS (.whl), OUT (benchmarks/results/gpu_check), and
# GPU_CHECK_SCALE=smoke: every step tiny (64 px, 1 epoch) and generous caps, for a CPU. So far
# it has only run on CPU, that way, on the JAX and PyTorch backends.
# The Python it needs (backend checks, the probe, summary.json) is benchmarks/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=${1:-}

if [ "$MODE" = prepare ]; then
    touch .git/info/exclude
    for folder in /.whl/ /.gpu_data/; do
        grep -qxF "$folder" .git/info/exclude || echo "$folder" >> .git/info/exclude
    done
    exec "${GPU_CHECK_PYTHON:-python3}" benchmarks/pack_for_gpu.py "${@:2}"
fi
if [ "$MODE" != device ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    echo "usage: bash benchmarks/gpu_check.sh prepare|device" >&2
    exit 2
fi

# ---------------------------------------------------------------------------- device mode ----
PY=${GPU_CHECK_PYTHON:-python3}
SCALE=${GPU_CHECK_SCALE:-full}
BACKEND=${GPU_CHECK_BACKEND:-jax}
if [ "$BACKEND" = jax ]; then COMPARE_DEFAULT=torch; else COMPARE_DEFAULT=jax; fi
COMPARE_BACKEND=${GPU_CHECK_COMPARE_BACKEND:-$COMPARE_DEFAULT}
TEST_BACKEND=${GPU_CHECK_TEST_BACKEND:-torch}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
DATA=${GPU_CHECK_DATA:-$REPO/.gpu_data/covid19-radiography-224}
OUT=${OUT:-$REPO/benchmarks/results/gpu_check}
WORK=$(mktemp -d /tmp/gpu_check_work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
STEPS_TSV=$WORK/steps.tsv
START=$(date +%s)
: > "$LOG"
: > "$STEPS_TSV"

if [ "$SCALE" = smoke ]; then
    BUDGET=${GPU_CHECK_BUDGET_S:-3600}
    SPEED_ARGS=(--images 72 --image-size 64 --epochs 1 --slow-images 16 --throughput-batches 2
                --throughput-batch-sizes 8,16 --sections throughput,protocol,paper_way,pipeline)
    COMPARE_ARGS=(--images 72 --image-size 64 --epochs 1 --throughput-batches 2
                  --throughput-batch-sizes 8 --sections throughput,protocol)
    PYTEST_ARGS=(-m "not slow")
    SAMPLE_ARGS=(-p n_per_class=24 -p epochs=1 -p batch_size=8 -p image_size=64 -p extended_test_size=16)
    declare -A CAP=([probe]=120 [speed]=900 [compare]=900 [pytest]=900 [sample]=900)
    TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-600}
elif [ "$SCALE" = full ]; then
    BUDGET=${GPU_CHECK_BUDGET_S:-390}
    SPEED_ARGS=(--images 1000 --throughput-batches 40 --throughput-batch-sizes 32,128
                --sections throughput,protocol,pipeline)
    COMPARE_ARGS=(--images 1000 --throughput-batches 20 --throughput-batch-sizes 32
                  --sections throughput,protocol)
    PYTEST_ARGS=()
    SAMPLE_ARGS=()
    declare -A CAP=([probe]=20 [speed]=170 [compare]=70 [pytest]=50 [sample]=55)
    TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-60}
else
    echo "GPU_CHECK_SCALE must be full or smoke, not $SCALE" >&2
    exit 2
fi
STEPS=${GPU_CHECK_STEPS:-probe speed compare pytest sample}
for cap in ${GPU_CHECK_CAPS:-}; do CAP[${cap%%=*}]=${cap#*=}; done  # e.g. GPU_CHECK_CAPS="speed=240"

say() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$STEPS_TSV"; }  # step status rc s cap backend

# Run one step on a Keras backend, under its cap and what is left of the whole budget; a step
# that fails or times out is recorded and the run goes on.   step NAME BACKEND LOGFILE command...
step() {
    local name=$1 backend=$2 logfile=$3; shift 3
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    local left=$(( BUDGET - ($(date +%s) - START) - 10 )) limit=${CAP[$name]}
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 15 ]; then
        say "$name: skipped, ${left}s left of the ${BUDGET}s budget"
        record "$name" skipped "" 0 "${CAP[$name]}" "$backend"
        return 0
    fi
    if ! KERAS_BACKEND=$backend "$PY" benchmarks/gpu_check.py has "$backend" 2> /dev/null; then
        say "$name: skipped, $backend is not installed for $PY"
        record "$name" skipped "" 0 "${CAP[$name]}" "$backend"
        return 0
    fi
    say "$name on $backend: start (cap ${limit}s) -> $(basename "$logfile")"
    [ "$logfile" != "$LOG" ] && : > "$logfile"
    echo "===== $name on $backend: $* =====" >> "$logfile"
    local t0 rc status seconds
    t0=$(date +%s)
    # SIGINT first so Python keeps what it has (pytest prints its summary; speed.py has saved
    # its JSON after every row).
    KERAS_BACKEND=$backend timeout --signal=INT --kill-after=20 "$limit" "$@" >> "$logfile" 2>&1
    rc=$?
    seconds=$(( $(date +%s) - t0 ))
    case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
    say "$name: $status (rc $rc) in ${seconds}s"
    if [ "$status" != ok ]; then
        echo "----- last lines of $(basename "$logfile") -----"
        tail -n 25 "$logfile"
        echo "-----"
    fi
    record "$name" "$status" "$rc" "$seconds" "${CAP[$name]}" "$backend"
}

say "scale $SCALE; benchmark on $BACKEND, compare on $COMPARE_BACKEND, tests and sample on" \
    "$TEST_BACKEND; steps: $STEPS; budget ${BUDGET}s; output in $OUT"

# The wheels this machine lacks (prepare step). TensorFlow is not among them, nor needed.
t0=$(date +%s)
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    rm -rf "$SITE"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl >> "$LOG" 2>&1; then
        say "installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - t0 ))s"
        record install ok 0 "$(( $(date +%s) - t0 ))" 20 -
    else
        say "installing the wheels FAILED (see gpu_check.log); going on with what is there"
        record install failed 1 "$(( $(date +%s) - t0 ))" 20 -
    fi
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    say "no wheels in $WHEELS: using $PY's own packages"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d "$DATA" ] || say "WARNING: no images at $DATA: run 'bash benchmarks/gpu_check.sh prepare' first and carry .gpu_data"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=2 CXR_DATA_DIR=$DATA CXR_REQUIRE_DATA=1

# 1. What is there: the GPU, versions, the dtype policy training picks ("auto").
step probe "$BACKEND" "$LOG" "$PY" benchmarks/gpu_check.py probe "$WORK/probe.json"

# 2. The benchmark with mixed precision (auto), on the benchmark backend, the goals first.
step speed "$BACKEND" "$LOG" "$PY" benchmarks/speed.py --data-dir "$DATA" --out "$OUT/speed.json" \
    --mixed-precision auto "${SPEED_ARGS[@]}"

# 3. The same measurements on the other backend, for comparison.
step compare "$COMPARE_BACKEND" "$LOG" "$PY" benchmarks/speed.py --data-dir "$DATA" \
    --out "$OUT/speed_compare.json" --mixed-precision auto "${COMPARE_ARGS[@]}"

# 4. The unit tests that matter for training: models, the protocol, fast path = paper's way,
# determinism, saved results, learning signal (slow).
PYTEST_TIMEOUT=()  # per test, where pytest-timeout is installed (it is on the GPU machine)
"$PY" benchmarks/gpu_check.py has pytest_timeout 2> /dev/null && PYTEST_TIMEOUT=(--timeout "$TEST_TIMEOUT")
step pytest "$TEST_BACKEND" "$OUT/pytest.log" "$PY" -m pytest tests/test_models.py tests/test_training.py \
    -ra -p no:cacheprovider --durations=10 "${PYTEST_TIMEOUT[@]}" "${PYTEST_ARGS[@]}"

# 5. The `sample` profile: the seven notebooks executed by papermill, as CI runs them.
step sample "$TEST_BACKEND" "$LOG" "$PY" -m cxr_utils.run --profile sample --data-dir "$DATA" \
    --results-dir "$WORK/sample" -p cache_dir="$WORK/cache" "${SAMPLE_ARGS[@]}"
if [ -f "$WORK/sample/run.json" ]; then
    cp "$WORK/sample/run.json" "$OUT/sample_run.json"
    tar -czf "$OUT/sample_results.tar.gz" -C "$WORK" --exclude='*.keras' sample
fi

# Summary: summary.json (steps, figures, goals), and a short table at the end of the output.
"$PY" benchmarks/gpu_check.py summary --steps "$STEPS_TSV" --out "$OUT" --work "$WORK" --scale "$SCALE" \
    --wall-s "$(( $(date +%s) - START ))" 2>&1 | tee -a "$LOG"

# Exit status 0 only when every step ran and ended ok (the outputs are under $OUT either way).
status=0
grep -qvP '\tok\t' "$STEPS_TSV" && status=1
exit $status
