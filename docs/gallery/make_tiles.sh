#!/usr/bin/env bash
# The gallery's 2048 px result in exact tiles (docs/gallery.md): tubingen x starry_night's 1024 px result
# (docs/gallery/sizes/tubingen_starry_night_1024.jpg) refined at 2048 px in 512 px tiles with a bfloat16 L-BFGS
# history, then two crops at 100%: where four tiles meet, and the same place in the untiled 1024 px result
# enlarged 2x. Only our results are saved (docs/gallery/), never the inputs.
#   bash docs/gallery/make_tiles.sh [IMAGES_DIR] [STEPS] [OUT]
set -euo pipefail
images=$(realpath "${1:-../shared/images}")
steps=${2:-15}
out=${3:-outputs/gallery2048}
if [ ! -f "$out/result.png" ]; then
  python -m nst_lightning "content=$images/tubingen.jpg" "style=$images/starry_night.jpg" size=2048 "steps=$steps" \
    engine.tile=512 optimizer.history_dtype=bfloat16 init=image \
    init.path=docs/gallery/sizes/tubingen_starry_night_1024.jpg trainer.enable_progress_bar=false \
    "hydra.run.dir=$out"
fi
python - "$out/result.png" docs/gallery/sizes/tubingen_starry_night_1024.jpg docs/gallery <<'PY'
import sys
from PIL import Image

tiled, untiled, folder = Image.open(sys.argv[1]).convert("RGB"), Image.open(sys.argv[2]).convert("RGB"), sys.argv[3]
box = (1024 - 320, 512 - 240, 1024 + 320, 512 + 240)  # 640 x 480 px around the corner four 512 px tiles share
tiled.resize((tiled.width // 2, tiled.height // 2), Image.Resampling.LANCZOS).save(f"{folder}/tiles_2048_whole.jpg", quality=90)
tiled.crop(box).save(f"{folder}/tiles_2048_crop.jpg", quality=92)
big = untiled.resize((untiled.width * 2, untiled.height * 2), Image.Resampling.LANCZOS)
big.crop(box).save(f"{folder}/tiles_1024_untiled_crop.jpg", quality=92)
print(tiled.size, "->", folder)
PY
