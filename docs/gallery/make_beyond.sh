#!/usr/bin/env bash
# Regenerates the README's "Beyond the paper" pictures (docs/gallery/beyond_*.jpg): one run per option,
# tubingen x starry_night (and the_scream), 256 px, 200 steps. Only our results are saved, never the inputs.
#   bash docs/gallery/make_beyond.sh [IMAGES_DIR] [STEPS] [OUT]
#   (IMAGES_DIR holds tubingen.jpg, starry_night.jpg, the_scream.jpg; runs already in OUT are kept)
set -euo pipefail
images=$(realpath "${1:-../shared/images}")
steps=${2:-200}
out=${3:-outputs/gallery-$(date +%Y-%m-%d_%H-%M-%S)}
common=(recipe=paper content="$images/tubingen.jpg" size=256 "steps=$steps" snapshot_every=0 trainer.enable_progress_bar=false)
starry="$images/starry_night.jpg"
scream="$images/the_scream.jpg"
mkdir -p "$out"
# A mask: style on the upper half (the sky), a soft edge, the photo below.
[ -f "$out/mask.png" ] || python - "$out/mask.png" <<'PY'
import sys
import numpy as np
from PIL import Image
y = np.linspace(0, 1, 256)[:, None].repeat(256, 1)
Image.fromarray((np.clip((0.55 - y) / 0.1, 0, 1) * 255).astype(np.uint8)).save(sys.argv[1])
PY
run() { [ -f "$out/$1/result.png" ] || python -m nst_lightning "${common[@]}" "hydra.run.dir=$out/$1" "${@:2}"; }
run plain style="$starry"
run two_styles "style=[$starry,$scream]" "style_blend=[0.5,0.5]"
run luminance style="$starry" preserve_color=luminance
run histogram style="$starry" preserve_color=histogram
run mask style="$starry" "content_mask=$out/mask.png" init=content
run coarse_to_fine style="$starry" "scales=[128,256]" "scale_steps=[$((steps * 3 / 4)),$((steps / 4))]"
python - "$out" docs/gallery <<'PY'
import sys
from pathlib import Path
from PIL import Image, ImageDraw
out, dest = Path(sys.argv[1]), Path(sys.argv[2])
names = ["plain", "two_styles", "luminance", "histogram", "mask", "coarse_to_fine"]
labels = ["paper (starry night)", "two styles, 50/50 blend", "preserve_color=luminance", "preserve_color=histogram",
          "content_mask (sky only)", "scales=[128,256]"]
tiles = [Image.open(out / n / "result.png").convert("RGB") for n in names]
w, h = tiles[0].size
sheet = Image.new("RGB", (3 * w, 2 * (h + 18)), "white")
draw = ImageDraw.Draw(sheet)
for i, (tile, label) in enumerate(zip(tiles, labels)):
    x, y = (i % 3) * w, (i // 3) * (h + 18)
    sheet.paste(tile.resize((w, h)), (x, y + 18))
    draw.text((x + 4, y + 3), label, fill="black")
sheet.save(dest / "beyond.jpg", quality=88)
PY
echo "wrote docs/gallery/beyond.jpg from $out"
