"""How much memory a run will need, checked before any heavy work: a run that cannot fit is refused up front
with the estimate and what to change, instead of being killed by the kernel (or CUDA) halfway through.

The estimate is a sum of the parts a run holds at its peak, the backward pass of a step:

- ``runtime``: Python, torch, Lightning and TensorBoard with the network decoded (CPU: the whole process at a
  tiny size; CUDA: cuDNN workspace, the context itself is already outside the free memory we compare with);
- ``weights``: the cut VGG19, fp32 (plus its bf16 copy under bf16/16 autocast);
- ``activations``: every feature map of the cut network that autograd keeps for the backward pass, at the
  run's precision, times ``BACKWARD_FACTOR`` for the gradients and temporaries of the backward pass;
- ``gram``: per style layer, the float32 copy F/sqrt(M) the Gram matrix is formed from, and the N x N matrices;
- ``optimizer``: L-BFGS history, 2 x min(history_size, steps) vectors of the image's size in float32, plus a few
  working vectors (Adam: two moments);
- ``images``: the image, its gradient, the last finite copy, content and style images.

Calibration (``python benchmarks/run.py``, peak RSS of ``python -m nst_lightning`` runs of a few steps,
tubingen x starry_night, 2-core AMD EPYC, torch 2.14 CPU, see benchmarks/results.json): the estimate is
within about 5% of the measured peak at 512 and 1024 px in fp32 (it is about 25% low at 256 px, where
allocator slack and library buffers of a few tens of MB dominate the small activations). See
``benchmarks/README.md`` for the table.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from nst_lightning.errors import NSTError
from nst_lightning.vgg import LAYERS, layer_channels

# Calibrated on CPU (see the module docstring): the process at a tiny size, and the backward pass's
# gradients and temporaries as a multiple of the activations kept for it.
RUNTIME_BYTES = {"cpu": 840 * 2**20, "cuda": 256 * 2**20}
BACKWARD_FACTOR = 2.0
HALF_PRECISIONS = ("bf16-mixed", "bf16-true", "16-mixed", "16-true", "bf16", "16")
SKIP_ENV = "NST_SKIP_MEMORY_CHECK"


def _feature_maps(height: int, width: int, deepest: str) -> list[tuple[str, int, int]]:
    """(layer, channels, positions) of every layer output of the network cut after ``deepest``."""
    maps, h, w, channels = [], height, width, 3
    for name in LAYERS[: LAYERS.index(deepest) + 1]:
        if name.startswith("pool"):
            h, w = h // 2, w // 2  # 2x2, stride 2: floor
        else:
            channels = layer_channels(name)
        maps.append((name, channels, h * w))
    return maps


def memory_parts(
    height: int,
    width: int,
    layers: list[str] | tuple[str, ...] = ("conv4_2", "conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
    style_layers: list[str] | tuple[str, ...] | None = None,
    images: int = 1,
    history_size: int = 100,
    steps: int = 300,
    optimizer: str = "lbfgs",
    precision: str = "32-true",
    device: str = "cpu",
) -> dict[str, int]:
    """The estimated peak of a run, part by part, in bytes (see the module docstring).

    ``layers``: every layer whose loss is computed (the network is cut after the deepest); ``style_layers``:
    those with a Gram matrix (default: every layer but the first, the content layer, as in the default list).
    """
    style_layers = list(layers[1:] if style_layers is None else style_layers)
    deepest = max(layers, key=LAYERS.index)
    maps = _feature_maps(height, width, deepest)
    half = str(precision) in HALF_PRECISIONS
    # bf16/16 halve what autograd keeps, except on a CPU without bf16 instructions, where the convolutions
    # fall back to float32 kernels and keep both copies (measured: +18% over fp32 at 512 px, not -30%).
    act_bytes = (2 if device == "cuda" or native_bf16_cpu() else 6) if half else 4
    pixels = 3 * height * width  # one image's numel
    weights = sum(layer_channels(n) * (maps[i - 1][1] if i else 3) * 9 * 4 for i, (n, _, _) in enumerate(maps))
    activations = sum(c * m for _, c, m in maps) * act_bytes * images
    by_name = {name: (c, m) for name, c, m in maps}
    gram = sum(4 * (by_name[n][0] * by_name[n][1] + 4 * by_name[n][0] ** 2) for n in style_layers) * images
    if optimizer == "lbfgs":
        opt_bytes = (2 * min(history_size, steps) + 4) * pixels * 4 * images
    else:
        opt_bytes = 2 * pixels * 4 * images
    return {
        "runtime": RUNTIME_BYTES.get(device, RUNTIME_BYTES["cpu"]),
        "weights": int(weights * (1.5 if half else 1.0)),
        "activations": int(activations * BACKWARD_FACTOR),
        "gram": gram,
        "optimizer": opt_bytes,
        "images": (3 * images + 2) * pixels * 4,
    }


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 instructions (AMX or AVX512-BF16); Linux only, False where it cannot be told."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def estimate_peak_bytes(height: int, width: int, **kwargs: Any) -> int:
    """The estimated peak memory of a run at ``height`` x ``width`` pixels, in bytes (arguments: memory_parts)."""
    return sum(memory_parts(height, width, **kwargs).values())


def available_bytes(device: str = "cpu") -> int | None:
    """Memory the run can still take: free CUDA memory, or MemAvailable (psutil if installed, else
    /proc/meminfo), capped by a cgroup limit where one is set; None where it cannot be told."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    available: int | None = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
        except OSError:
            pass
    try:  # a container's own limit (cgroup v2) may be far below the machine's memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            room = int(limit) - used
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def _aspect(spec: str) -> tuple[int, int]:
    """(width, height) of an image file from its header only; a square for built-in names or unreadable files."""
    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(Path(os.path.expanduser(str(spec)))) as img:
                return img.size
    except Exception:  # a built-in name, a missing or odd file: load_image will say what is wrong
        return (1, 1)


def _device(cfg: Any) -> str | None:
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator == "cpu":
        return "cpu"
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else None  # Lightning itself will say there is no GPU
    return "cpu" if accelerator == "auto" else None  # mps, tpu, ...: not checked


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n < 10 * 2**30 else f"{n / 2**30:.0f} GiB"


def check_memory(cfg: Any) -> int | None:
    """Refuse (NSTError, one line) a run whose estimated peak exceeds the memory available; return the estimate.

    The largest stage of ``scales`` and every image of ``batch_sweep`` count. ``NST_SKIP_MEMORY_CHECK=1``
    skips the check (if the estimate is wrong for a machine).
    """
    device = _device(cfg)
    if device is None or os.environ.get(SKIP_ENV) == "1":
        return None
    long_side = max([int(cfg.size), *[int(s) for s in (cfg.get("scales") or [])]])
    sweep = cfg.get("batch_sweep") or {}
    images = max([1, *[len(v) for v in sweep.values() if v is not None]])
    layers = [cfg.content_layer, *cfg.style_layers]
    w, h = _aspect(cfg.content)

    def shape(side: int) -> tuple[int, int]:
        scale = side / max(w, h)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def estimate(side: int, history: int | None = None) -> int:
        return estimate_peak_bytes(
            *shape(side),
            layers=layers,
            style_layers=list(cfg.style_layers),
            images=images,
            history_size=history or int(cfg.optimizer.history_size),
            steps=int(cfg.steps),
            optimizer=str(cfg.optimizer.name),
            precision=str(cfg.trainer.get("precision", "32-true")),
            device=device,
        )

    needed, available = estimate(long_side), available_bytes(device)
    if available is None or needed <= available:
        return needed
    lo, hi = 16, long_side  # the largest long side that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate(mid) <= available else (lo, mid)
    advice = [f"lower size (about {lo} px fits)" if estimate(lo) <= available else "free some memory"]
    history = int(cfg.optimizer.history_size)
    if str(cfg.optimizer.name) == "lbfgs" and history > 10 and estimate(long_side, 10) <= available:
        lo_h, hi_h = 10, history  # the largest L-BFGS memory that fits at this size
        while hi_h - lo_h > 1:
            mid = (lo_h + hi_h) // 2
            lo_h, hi_h = (mid, hi_h) if estimate(long_side, mid) <= available else (lo_h, mid)
        advice.append(f"optimizer.history_size={lo_h}")
    if images > 1:
        advice.append("fewer images in batch_sweep")
    where = "GPU memory" if device == "cuda" else "memory"
    raise NSTError(
        f"size={long_side} needs about {_gib(needed)} but {_gib(available)} of {where} is available: "
        f"{', or '.join(advice)} ({SKIP_ENV}=1 tries anyway)"
    )


def slow_precision_warning(cfg: Any) -> str | None:
    """The warning for half precision on a CPU without bf16/fp16 instructions (it emulates them: benchmarks/
    measured bf16-mixed 40-50x slower than 32-true there), or None where half precision is not a slowdown."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision not in HALF_PRECISIONS or _device(cfg) != "cpu" or native_bf16_cpu():
        return None
    return (
        f"trainer.precision={precision} on a CPU without bf16 instructions (AMX / AVX512-BF16) is emulated and "
        "much slower than 32-true (40-50x in benchmarks/README.md); use it on a GPU or such a CPU"
    )
