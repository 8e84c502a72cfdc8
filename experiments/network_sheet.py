"""Networks side by side: study 6, the randomly initialised network (the seed notes: "investigate the difference
when starting with a randomly initialized network"), and the paper's normalised VGG19 next to the original.

    python experiments/network_sheet.py ratio --network vgg19_random --content C --style S --size 192 --ratio 1e-3
        prints the ratio for --network that gives the same balance at the white-noise start as --ratio gives with
        the original vgg19, and writes the measurement to experiments/balance_<network>.json
    python experiments/network_sheet.py sheet DIR [DIR ...] --out experiments/figures/random_network.png
        one sheet from batched runs of make_figures.sh, a row per folder (named by the folder): textures by
        style-layer subset, content reconstructions at conv2_2 and conv4_2, and the full transfer

Why a matched balance: other weights put the activations on another scale (L_content grows with their square,
E_l with their fourth power), so vgg19's ratio on random weights is nearly a content reconstruction. Matching
alpha L_content / (beta L_style) at the start compares like with like.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from nst_lightning.apps.presets import register_configs
from nst_lightning.config.schema import conf_dir
from nst_lightning.results.report import Layout, build_grid, find_runs
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import atomic_write, write_json

HERE = Path(__file__).resolve().parent
REFERENCE = "vgg19"  # the network whose ratios are the paper's
# The columns of the sheet, in the order of make_figures.sh's batch: (label, what the image optimises)
COLUMNS = (
    "texture conv1_1",
    "texture ..conv2_1",
    "texture ..conv3_1",
    "texture ..conv4_1",
    "texture ..conv5_1",
    "content conv2_2",
    "content conv4_2",
    "transfer",
)


def start_losses(network: str, content: str, style: str, size: int, seed: int) -> dict[str, float]:
    """The paper's L_content (conv4_2) and L_style (five convN_1, equal weights) of the white-noise start."""
    from nst_lightning.engine.run import build_module  # the network code: only this subcommand needs it

    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"network={network}",
                f"content={content}",
                f"style={style}",
                f"size={size}",
                f"seed={seed}",
                "recipe=paper",  # avg pooling, equal layer weights, white noise, the exact objective
                "content_weight=1",
                "style_weight=1",
                "metrics=false",
            ],
        )
    module = build_module(OmegaConf.to_object(cfg))
    losses = module.image_losses(module.evaluate(), 0)
    return {"content": losses["content"], "style": losses["style"]}


def matched_ratio(args: argparse.Namespace) -> dict[str, Any]:
    networks = (REFERENCE, args.network)
    measured = {net: start_losses(net, args.content, args.style, args.size, args.seed) for net in networks}
    balance = {net: m["style"] / m["content"] for net, m in measured.items()}  # L_style / L_content at the start
    # alpha/beta x L_content/L_style equal for both networks at the start
    ratio = args.ratio * balance[args.network] / balance[REFERENCE]
    return {
        "content": args.content,
        "style": args.style,
        "size": args.size,
        "seed": args.seed,
        "start_losses": measured,
        "style_over_content_at_start": balance,
        "network": args.network,
        "ratio_vgg19": args.ratio,
        "ratio": ratio,
        "factor": ratio / args.ratio,
    }


def sheet(folders: list[Path], tile: int) -> Image.Image:
    """A row per folder (labelled with its name: the network) of the eight images of its batch, with a footer
    stating the steps and size."""
    layout = Layout(row_keys=["network"], col_keys=[""], x_keys=1, rows=[], cols=[(c,) for c in COLUMNS])
    for i, folder in enumerate(folders):
        network = folder.name
        runs = find_runs(folder)
        if len(runs) != len(COLUMNS):
            raise NSTError(f"{folder} holds {len(runs)} images, the sheet needs the {len(COLUMNS)} of make_figures.sh")
        layout.rows.append((network,))
        for j, run in enumerate(runs):
            layout.cells[(i, j)] = run
            layout.runs.append(run)
    return build_grid(layout, tile, sources=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/network_sheet.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("ratio", help="the ratio for --network matching vgg19's balance at the start")
    r.add_argument("--network", default="vgg19_random")
    r.add_argument("--content", default="tubingen")
    r.add_argument("--style", default="starry_night")
    r.add_argument("--size", type=int, default=192)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--ratio", type=float, default=1e-3, help="the pretrained network's ratio (default 1e-3)")
    r.add_argument("--out", help="default: experiments/balance_<network>.json")
    s = sub.add_parser("sheet", help="the figure from the two batched runs")
    s.add_argument("folders", type=Path, nargs="+", help="one batched run per network, named by it")
    s.add_argument("--tile", type=int, default=160)
    s.add_argument("--out", default=str(HERE / "figures" / "random_network.png"))
    args = parser.parse_args(argv)
    try:
        if args.command == "ratio":
            result = matched_ratio(args)
            write_json(result, Path(args.out or HERE / f"balance_{args.network}.json"))
            print(f"{result['ratio']:.3g}")
        else:
            image = sheet(args.folders, args.tile)
            atomic_write(Path(args.out), lambda f: image.save(f, format="PNG"))
            print(args.out)
    except NSTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
