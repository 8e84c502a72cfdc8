#!/usr/bin/env bash
# The gallery at real sizes (docs/gallery.md): tubingen and golden_gate by starry_night, the_scream, shipwreck and
# seated-nude, each with the defaults at one size. Only our results are saved (docs/gallery/sizes/), never the inputs.
#   bash docs/gallery/make_sizes.sh [IMAGES_DIR] [SIZE] [STEPS] [OUT] [EXTRA overrides ...]
#   e.g. bash docs/gallery/make_sizes.sh ../shared/images 512 300
#        FROM=outputs/gallery512 bash docs/gallery/make_sizes.sh ../shared/images 1024 60 outputs/gallery1024
# FROM: a folder of this script's runs at a smaller size; each pair then starts from its result there (init=image),
# by hand what scales=[512,1024] scale_steps=[300,60] does in one run (the gallery's 1024 px images were made so).
# Runs already finished in OUT are kept, so the script can be stopped and started again.
set -euo pipefail
images=$(realpath "${1:-../shared/images}")
size=${2:-512}
steps=${3:-300}
out=${4:-outputs/gallery$size}
extra=("${@:5}")
mkdir -p "$out" docs/gallery/sizes
for content in tubingen golden_gate; do
  for style in starry_night the_scream seated-nude shipwreck; do
    name="${content}_${style}"
    if [ -d "$out/$name" ] && [ ! -f "$out/$name/result.png" ]; then  # stopped part-way: carry on from its checkpoint
      python -m nst_lightning "resume=$out/$name" trainer.enable_progress_bar=false
    elif [ ! -f "$out/$name/result.png" ]; then
      start=()
      [ -n "${FROM:-}" ] && start=(init=image "init.path=$FROM/$name/result.png")
      python -m nst_lightning "content=$images/$content.jpg" "style=$images/$style.jpg" "size=$size" "steps=$steps" \
        trainer.enable_progress_bar=false "hydra.run.dir=$out/$name" "${start[@]}" "${extra[@]}"
    fi
    python -c "from PIL import Image; import sys; Image.open(sys.argv[1]).convert('RGB').save(sys.argv[2], quality=92)" \
      "$out/$name/result.png" "docs/gallery/sizes/${name}_$size.jpg"
  done
done
