#!/usr/bin/env bash
# Regenerates the study figures in experiments/figures/: each study preset as one Hydra multirun,
# then its labelled grid and loss plot (python -m nst_lightning.report).
#   bash experiments/make_figures.sh [CONTENT] [STYLE] [SIZE] [STEPS] [STUDY ...]
# CONTENT/STYLE: paths or built-in names (tubingen and starry_night download once, checksummed).
set -euo pipefail
content=${1:-tubingen}
style=${2:-starry_night}
size=${3:-256}
steps=${4:-200}
shift $(($# < 4 ? $# : 4))
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(content_layers style_layers tradeoff fig3_grid initialisation initialisation_seeds
  style_losses)
stamp=$(date +%Y-%m-%d_%H-%M-%S)
mkdir -p experiments/figures
for study in "${studies[@]}"; do
  preset=$study
  extra=()
  if [ "$study" = initialisation_seeds ]; then  # stochastic results: four white-noise seeds
    preset=initialisation
    extra=(init=noise seed=0,1,2,3)
  fi
  sweep=outputs/studies/$study-$stamp
  if [ "$study" = fig3_grid ]; then
    # 20 settings sharing the images, the size and the network: one batch in one process (batch_sweep),
    # the same images as the multirun `-m experiment=fig3_grid`, one optimiser state per image.
    rows=() ratios=()
    for layers in conv1_1 conv1_1,conv2_1 conv1_1,conv2_1,conv3_1 conv1_1,conv2_1,conv3_1,conv4_1 \
      conv1_1,conv2_1,conv3_1,conv4_1,conv5_1; do
      for ratio in 1e-5 1e-4 1e-3 1e-2; do rows+=("[$layers]") ratios+=("$ratio"); done
    done
    python -m nst_lightning experiment=fig3_grid "content=$content" "style=$style" "size=$size" "steps=$steps" \
      trainer.enable_progress_bar=false snapshot_every=0 "hydra.run.dir=$sweep" \
      "batch_sweep.style_layers=[$(IFS=,; echo "${rows[*]}")]" "batch_sweep.ratio=[$(IFS=,; echo "${ratios[*]}")]"
  else
    python -m nst_lightning -m "experiment=$preset" "content=$content" "style=$style" "size=$size" "steps=$steps" \
      trainer.enable_progress_bar=false snapshot_every=0 "hydra.sweep.dir=$sweep" "${extra[@]}"
  fi
  layout=()
  [ "$study" = fig3_grid ] && layout=(--rows style_layers --cols ratio)  # as the paper's Figure 3
  # each result measured by every style statistic and the panel: experiments/figures/style_losses_cross_table.*
  [ "$study" = style_losses ] && layout=(--cross-table experiments/figures/style_losses_cross_table.csv)
  python -m nst_lightning.report "$sweep" --tile 192 --no-sources "${layout[@]}" \
    --out "experiments/figures/$study.png" --losses "experiments/figures/${study}_losses.png" \
    --summary "experiments/figures/${study}_summary.csv"
done
