#!/usr/bin/env bash
# Regenerates the study figures in experiments/figures/: each study as one run or Hydra multirun, then its labelled
# grid (which states the steps and size it ran), loss plot and summary (python -m nst_lightning.report).
#   bash experiments/make_figures.sh [CONTENT] [STYLE] [SIZE] [STEPS] [STUDY ...]
# CONTENT/STYLE: paths or built-in names (tubingen, starry_night, hoovertowernight download once, checksummed).
# STEPS: "seeds" (the default) runs each study for the iteration count of the seed slides: 3000, 5000 for the
#   photorealistic study, 10000 for the pathological start; a number runs every study for that many steps.
# NIGHT: the dark photograph of the photorealistic study (default: hoovertowernight; STYLE is not used there).
# STUDY: content_layers style_layers tradeoff fig3_grid content_layer_transfer initialisation
#   initialisation_pathological initialisation_seeds random_network normalised_network photorealistic style_losses
#   (default: all).
set -euo pipefail
content=${1:-tubingen}
style=${2:-starry_night}
size=${3:-256}
steps=${4:-seeds}
shift $(($# < 4 ? $# : 4))
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(content_layers style_layers tradeoff fig3_grid content_layer_transfer
  initialisation initialisation_pathological initialisation_seeds random_network normalised_network photorealistic
  style_losses)
stamp=$(date +%Y-%m-%d_%H-%M-%S)
quiet=(trainer.enable_progress_bar=false snapshot_every=0)
L5="conv1_1,conv2_1,conv3_1,conv4_1,conv5_1"
mkdir -p experiments/figures

seed_steps() {  # the seed slides' iteration count for a study
  case $1 in
    photorealistic) echo 5000 ;;
    initialisation_pathological) echo 10000 ;;
    *) echo 3000 ;;
  esac
}

for study in "${studies[@]}"; do
  n=$steps
  [ "$n" = seeds ] && n=$(seed_steps "$study")
  sweep=outputs/studies/$study-$stamp
  common=("content=$content" "style=$style" "size=$size" "steps=$n" "${quiet[@]}")
  layout=()
  case $study in
    fig3_grid)
      # 20 settings sharing the images, the size and the network: one batch in one process (batch_sweep), the
      # same images as the multirun `-m experiment=fig3_grid`, one optimiser state per image.
      rows=() ratios=()
      for layers in conv1_1 conv1_1,conv2_1 conv1_1,conv2_1,conv3_1 conv1_1,conv2_1,conv3_1,conv4_1 $L5; do
        for ratio in 1e-5 1e-4 1e-3 1e-2; do rows+=("[$layers]") ratios+=("$ratio"); done
      done
      python -m nst_lightning experiment=fig3_grid "${common[@]}" "hydra.run.dir=$sweep" \
        "batch_sweep.style_layers=[$(IFS=,; echo "${rows[*]}")]" "batch_sweep.ratio=[$(IFS=,; echo "${ratios[*]}")]"
      layout=(--rows style_layers --cols ratio)  # as the paper's Figure 3
      ;;
    content_layer_transfer)
      # the seed slides' "layers' influence": content conv2_2 vs conv4_2, and style conv2_1 vs conv4_1 alone
      python -m nst_lightning experiment=content_layer_transfer "${common[@]}" "hydra.run.dir=$sweep" \
        "batch_sweep.content_layer=[conv2_2,conv4_2,conv4_2,conv4_2]" \
        "batch_sweep.style_layers=[[$L5],[$L5],[conv2_1],[conv4_1]]"
      layout=(--labels "content conv2_2" "content conv4_2" "style conv2_1 alone" "style conv4_1 alone")
      ;;
    initialisation)
      python -m nst_lightning experiment=initialisation init.path=grace_hopper "${common[@]}" "hydra.run.dir=$sweep" \
        "batch_sweep.init=[noise,content,style,image]"
      layout=(--labels "white noise" "content" "style" "pathological")
      ;;
    initialisation_pathological)  # the slides' last start, run longer
      python -m nst_lightning experiment=initialisation init=image init.path=grace_hopper "${common[@]}" \
         "hydra.run.dir=$sweep/image"
      ;;
    initialisation_seeds)  # stochastic results: four white-noise seeds, as the slides
      python -m nst_lightning experiment=initialisation init=noise "${common[@]}" "hydra.run.dir=$sweep" \
        "batch_sweep.seed=[0,1,2,3]"
      layout=(--labels "seed 0" "seed 1" "seed 2" "seed 3")
      ;;
    random_network | normalised_network)
      # vgg19 and another network (random weights; the paper's normalised VGG19), each one batch: textures by
      # style-layer subset (content weight 0), content reconstructions at conv2_2 and conv4_2 (style weight 0), and
      # the transfer, at the ratio that matches vgg19's balance at the white-noise start (measured first)
      other=vgg19_random
      [ "$study" = normalised_network ] && other=vgg19_normalised
      matched=$(python experiments/network_sheet.py ratio --network "$other" --content "$content" --style "$style" \
        --size "$size")
      for network in vgg19 "$other"; do
        ratio=1e-3
        [ "$network" = "$other" ] && ratio=$matched
        python -m nst_lightning experiment=random_network "network=$network" "${common[@]}" \
          "hydra.run.dir=$sweep/$network" \
          "batch_sweep.content_weight=[0,0,0,0,0,1,1,$ratio]" "batch_sweep.style_weight=[1,1,1,1,1,0,0,1]" \
          "batch_sweep.content_layer=[conv4_2,conv4_2,conv4_2,conv4_2,conv4_2,conv2_2,conv4_2,conv4_2]" \
          "batch_sweep.style_layers=[[conv1_1],[conv1_1,conv2_1],[conv1_1,conv2_1,conv3_1],[conv1_1,conv2_1,conv3_1,conv4_1],[$L5],[$L5],[$L5],[$L5]]"
      done
      python experiments/network_sheet.py sheet "$sweep/vgg19" "$sweep/$other" --out "experiments/figures/$study.png"
      ;;
    photorealistic)  # the slides: a night photograph's look onto a day photograph, content start
      # its style is the dark photograph: $NIGHT, default the built-in hoovertowernight
      python -m nst_lightning experiment=photorealistic "${common[@]/#style=*/style=${NIGHT:-hoovertowernight}}" \
        "hydra.run.dir=$sweep"
      ;;
    *)
      python -m nst_lightning -m "experiment=$study" "${common[@]}" "hydra.sweep.dir=$sweep"
      # each result measured by every style statistic: experiments/figures/style_losses_cross_table.*
      [ "$study" = style_losses ] && layout=(--cross-table experiments/figures/style_losses_cross_table.csv)
      ;;
  esac
  out=experiments/figures/$study.png
  [[ "$study" == *_network ]] && out=$sweep/grid.png  # the sheet above is the figure
  python -m nst_lightning.report "$sweep" --tile 192 --no-sources "${layout[@]}" \
    --out "$out" --losses "experiments/figures/${study}_losses.png" \
    --summary "experiments/figures/${study}_summary.csv"
done
