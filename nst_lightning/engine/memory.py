"""How much memory a run will need, checked before any heavy work: a run that cannot fit is refused up front
with the estimate and what to change, instead of being killed by the kernel (or CUDA) halfway through.

The estimate is the memory the run holds throughout plus the largest of its three phases (they come one after
the other, and each frees what it used):

- ``runtime``: Python, torch, Lightning and TensorBoard with the network decoded (CPU: the whole process at a
  tiny size; CUDA: cuDNN workspace, the context itself is already outside the free memory we compare with);
- ``weights``: the cut VGG19, fp32 (plus its bf16 copy under bf16/16 autocast);
- ``images``: what the run holds throughout: the generated image, its gradient and last finite copy (per image
  of a batch), the content image and every style image at its own size, a mask, a temporal target, the
  content's colours (``preserve_color=luminance``);
- the optimisation (the peak of a step, its backward pass):

  - ``activations``: every feature map of the cut network that autograd keeps for the backward pass, at the
    run's precision, times ``BACKWARD_FACTOR`` for the gradients and temporaries of the backward pass;
  - ``gram``: per style layer, the float32 copy F/sqrt(M) the Gram matrix is formed from, and the N x N matrices;
  - ``style_loss``: what another style statistic (``style_loss=...``) keeps and needs, per element of the style
    layers' features;
  - ``optimizer``: L-BFGS history, 2 x history_size vectors of the image's size in float32 (allocated and zeroed
    whole at the first step, so resident however few steps run), plus a few working vectors (Adam: two moments);

- ``targets``: how much more than the optimisation the target pass needs: the network run once, without
  gradients, over the content and over each style image *at the style's own size* (``style_size``,
  ``style_scale``: a style larger than the output costs more here than the whole optimisation);
- ``decode``: how much more than both the decoding of the largest input needs (CPU only: it happens in host
  memory): the file's pixels as decoded (a JPEG at the reduced scale PIL's draft mode picks, any other format in
  full, both read from the header without decoding) and the resized image as bytes and floats.

Calibration (``python benchmarks/run.py``, peak RSS of ``python -m nst_lightning`` runs of a few steps,
tubingen x starry_night; the measured peaks against the estimate, and how close it is at each size, are in
``benchmarks/README.md`` (at small sizes allocator slack and library buffers dominate the activations). There
the style image has the content's size and the two extra phases are zero.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_lightning.model.tiles import grid_and_halo
from nst_lightning.model.vgg import layer_table
from nst_lightning.util.errors import NSTError

LayerTable = list[tuple[str, int, int]]  # (layer, channels, stride) in network order
VGG19_TABLE: LayerTable = layer_table("vgg19")

# Calibrated on CPU (see the module docstring): the process at a tiny size, and the backward pass's
# gradients and temporaries as a multiple of the activations kept for it.
RUNTIME_BYTES = {"cpu": 840 * 2**20, "cuda": 256 * 2**20}
BACKWARD_FACTOR = 2.0
# What a style loss other than gram keeps for its backward pass and needs in temporaries, in bytes per element of
# the style layers' features: calibrated at 1024 px with some margin (benchmarks/README.md, "Memory"). gram's own
# float32 copies and N x N matrices are the ``gram`` part, counted for every loss.
STYLE_LOSS_BYTES = {"mean_std": 10, "mmd": 4, "gaussian_w2": 14, "sliced_wasserstein": 16, "mrf": 10}
# The panel at the end of a run (results/metrics.py: measure): fixed bytes and bytes per pixel of the measured image;
# measured 1.0 GiB at 512 x 384 and 2.3 GiB at 1024 x 768 above the process before it (2026-12-03, AMD EPYC).
PANEL_BYTES = (int(0.55 * 2**30), 2400)
HALF_PRECISIONS = ("bf16-mixed", "bf16-true", "16-mixed", "16-true", "bf16", "16")
SKIP_ENV = "NST_SKIP_MEMORY_CHECK"


def _deepest(layers: list[str] | tuple[str, ...], table: LayerTable) -> str:
    order = [name for name, _, _ in table]
    return max(layers, key=order.index)


def _feature_maps(height: int, width: int, deepest: str, table: LayerTable = VGG19_TABLE) -> list[tuple[str, int, int]]:
    """(layer, channels, positions) of every layer output up to ``deepest`` (poolings floor: h // stride)."""
    maps = []
    for name, channels, stride in table:
        maps.append((name, channels, (height // stride) * (width // stride)))
        if name == deepest:
            break
    return maps


def target_pass_bytes(
    height: int,
    width: int,
    layers: list[str] | tuple[str, ...],
    style_layers: list[str] | tuple[str, ...],
    table: LayerTable = VGG19_TABLE,
) -> int:
    """The peak of one forward pass without gradients (the content and style targets) at ``height`` x ``width``:
    the outputs of every layer in use (the network returns them all), the input and output of the layer being
    computed, the input's preprocessed copies, and the float32 copy and Gram matrix of one style layer."""
    maps = _feature_maps(height, width, _deepest(layers, table), table)
    sizes = [c * m for _, c, m in maps]
    kept = sum(c * m for name, c, m in maps if name in set(layers))
    transient = max((sizes[i - 1] if i else 3 * height * width) + sizes[i] for i in range(len(sizes)))
    by_name = {name: (c, m) for name, c, m in maps}
    gram = max((by_name[n][0] * by_name[n][1] + by_name[n][0] ** 2 for n in style_layers), default=0)
    return 4 * (kept + transient + gram + 2 * 3 * height * width)


def _style_bytes(
    maps: list[tuple[str, int, int]], style_layers: list[str], per_element: int, images: int
) -> tuple[int, int]:
    """(Gram's float32 copies and N x N matrices, what another statistic keeps) over the style layers."""
    by_name = {name: (c, m) for name, c, m in maps}
    gram = sum(4 * (by_name[n][0] * by_name[n][1] + 4 * by_name[n][0] ** 2) for n in style_layers) * images
    return gram, per_element * sum(by_name[n][0] * by_name[n][1] for n in style_layers) * images


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
    styles: list[tuple[int, int]] | None = None,
    extra_channels: int = 0,
    decode: int = 0,
    style_loss: str = "gram",
    table: LayerTable = VGG19_TABLE,
    weight_bytes: int | None = None,
    optimizer_state: tuple[float, float] | None = None,
    statistic_bytes: int | None = None,
) -> dict[str, int]:
    """The estimated peak of a run, part by part, in bytes (see the module docstring); their sum is the estimate.

    ``layers``: every layer whose loss is computed (the network is cut after the deepest); ``style_layers``:
    those with a Gram matrix (default: every layer but the first, the content layer, as in the default list).
    ``styles``: (height, width) of each style image as the network sees it (default: one, the content's shape);
    ``extra_channels``: channels of other content-sized inputs held throughout (a mask 1, a temporal target 3,
    the content's colours 3); ``decode``: the host bytes of decoding the largest input (``decode_bytes``);
    ``style_loss``: the statistic (``STYLE_LOSS_BYTES``). Parts other than the built-ins: ``table``, ``weight_bytes``,
    ``optimizer_state`` (``optimizer_state_bytes``), ``statistic_bytes``. ``steps`` does not count (L-BFGS's whole
    history is allocated at its first step)."""
    style_layers = list(layers[1:] if style_layers is None else style_layers)
    styles = [(height, width)] if styles is None else list(styles)
    maps = _feature_maps(height, width, _deepest(layers, table), table)
    half = str(precision) in HALF_PRECISIONS
    # bf16/16 halve what autograd keeps, except on a CPU without bf16 instructions, where the convolutions
    # fall back to float32 kernels and keep both copies (measured in benchmarks/: more than fp32, not less).
    act_bytes = (2 if device == "cuda" or native_bf16_cpu() else 6) if half else 4
    pixels = 3 * height * width  # one image's numel
    if weight_bytes is None:
        weight_bytes = sum(c * (maps[i - 1][1] if i else 3) * 9 * 4 for i, (n, c, _) in enumerate(maps) if "conv" in n)
    activations = sum(c * m for _, c, m in maps) * act_bytes * images
    per_element = STYLE_LOSS_BYTES.get(style_loss, 0) if statistic_bytes is None else statistic_bytes
    gram, statistic = _style_bytes(maps, style_layers, per_element, images)
    if optimizer_state is None:  # the built-in optimisers: L-BFGS's history and working vectors, Adam's moments
        optimizer_state = (((2 * history_size + 4) if optimizer == "lbfgs" else 2) * 4.0, 0.0)
    opt_bytes = int(optimizer_state[0] * pixels * images + optimizer_state[1])
    optimisation = int(activations * BACKWARD_FACTOR) + gram + statistic + opt_bytes
    targets = max(target_pass_bytes(h, w, layers, style_layers, table) for h, w in [(height, width), *styles])
    held = (3 * images + 1) * pixels + sum(3 * h * w for h, w in styles) + extra_channels * height * width
    return {
        "runtime": RUNTIME_BYTES.get(device, RUNTIME_BYTES["cpu"]),
        "weights": int(weight_bytes * (1.5 if half else 1.0)),
        "activations": int(activations * BACKWARD_FACTOR),
        "gram": gram,
        "style_loss": statistic,
        "optimizer": opt_bytes,
        "images": held * 4,
        "targets": max(0, targets - optimisation),
        "decode": max(0, (decode if device == "cpu" else 0) - max(optimisation, targets)),
    }


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo); empty where they cannot be read."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(flags.split(":", 1)[1].split())


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 instructions (AMX or AVX512-BF16); False where it cannot be told."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


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


@dataclass(frozen=True)
class Header:
    """What an image file's header says, read without decoding a pixel."""

    width: int
    height: int
    jpeg: bool  # decoded at a reduced scale (PIL's draft mode), the others in full


def image_header(spec: Any) -> Header | None:
    """The size (after the EXIF orientation) and format of an image file; None for a built-in name, a missing,
    unreadable or non-regular file (never opened: a FIFO would block), which ``load_image`` will report."""
    if spec is None:
        return None
    path = Path(os.path.expanduser(str(spec)))
    try:
        if not path.is_file():
            return None
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                (w, h), jpeg = img.size, img.format == "JPEG"
                if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by a quarter turn
                    w, h = h, w
    except Exception:  # a corrupt or odd file: load_image will say what is wrong
        return None
    return Header(w, h, jpeg)


def resized_shape(header: Header | None, long_side: int) -> tuple[int, int]:
    """(height, width) of an image resized to ``long_side`` (a square when the header is unknown: the largest)."""
    if header is None:
        return long_side, long_side
    scale = long_side / max(header.width, header.height)
    return max(1, round(header.height * scale)), max(1, round(header.width * scale))


def decoded_pixels(header: Header | None, long_side: int) -> int:
    """How many pixels the file decodes to before it is resized to ``long_side`` (as ``images.open_image`` does)."""
    if header is None:
        return long_side * long_side
    w, h = header.width, header.height
    if header.jpeg:  # PIL's draft: the largest of 1/8, 1/4, 1/2 that keeps both sides >= the requested box
        ratio = min(w // long_side, h // long_side)
        scale = next(s for s in (8, 4, 2, 1) if ratio >= s or s == 1)
        w, h = -(-w // scale), -(-h // scale)
    return w * h


def decode_bytes(header: Header | None, long_side: int) -> int:
    """Host memory of loading one image: the decoded RGB pixels (and a converted copy, and the resize's
    intermediate), then the resized image as 8-bit RGB, its uint8 tensor and two float32 tensors."""
    height, width = resized_shape(header, long_side)
    return 9 * (0 if header is None else decoded_pixels(header, long_side)) + 30 * height * width


def device_of(config: Any) -> str | None:
    """Where the run's tensors live: cpu, cuda, or None where it is not checked (mps, tpu, no GPU for gpu)."""
    import torch

    accelerator = str(config.trainer.get("accelerator", "auto"))
    if accelerator == "cpu":
        return "cpu"
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else None  # Lightning itself will say there is no GPU
    return "cpu" if accelerator == "auto" else None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n < 10 * 2**30 else f"{n / 2**30:.0f} GiB"


def optimizer_state_bytes(factory: Any) -> tuple[float, float]:
    """(bytes per element of the image, fixed bytes) of an optimiser's state after its first step (L-BFGS
    allocates its whole history then), measured on two small images, plus two working vectors of the step."""
    import torch

    measured = []
    for side in (4, 16):
        image = torch.zeros(1, 3, side, side, requires_grad=True)

        def closure(image: Any = image) -> Any:
            image.grad = None
            loss = (image - 0.5).pow(2).sum()
            loss.backward()
            return loss.detach().reshape(1)

        optimizer = factory([image])
        optimizer.step(closure)
        state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        measured.append((image.numel(), sum(t.numel() * t.element_size() for t in state)))
    (n1, b1), (n2, b2) = measured
    slope = (b2 - b1) / (n2 - n1)
    return slope + 2 * 4, max(0.0, b1 - slope * n1)


@dataclass(frozen=True)
class RunShape:
    """What the estimate of one run needs, read from its config, its parts and its images' headers."""

    device: str
    precision: str
    images: int
    layers: list[str]
    style_layers: list[str]
    table: LayerTable
    weight_bytes: int
    optimizer_state: tuple[float, float]
    statistic_bytes: int
    content: Header | None
    styles: list[Header | None]
    at_content_side: list[str]  # files loaded at the content's size: a mask, a start, a temporal target
    extra_channels: int
    style_size: int | None
    style_scale: float
    content_layers: list[str]
    grid: int  # exact tiles: the network's grid and the halo a tile carries (model/tiles.py)
    halo: int
    gathered: bool  # the statistic keeps per-position values of the whole image (sliced Wasserstein's projections)
    metrics: bool = False  # the end-of-run panel is measured (results/metrics.py), while the run's state is held


def run_shape(config: Any, images: list[Any], parts: Any, device: str) -> RunShape:
    from nst_lightning.config.derive import layers_in_use, loss_weights, style_paths

    configs = [image.config for image in images]
    network = parts.network
    temporal = any(c.temporal_weight > 0 for c in configs)
    at_content_side = [config.content_mask, *[c.init.path for c in configs if str(c.init.kind) == "image"][:1]]
    at_content_side.append(config.temporal_target if temporal else None)
    extra = (1 if config.content_mask else 0) + (3 if temporal else 0)
    extra += 3 if str(config.preserve_color) == "luminance" else 0
    layers = list(dict.fromkeys(n for c in configs for n in layers_in_use(c))) or [network.layer_names[0]]
    statistic = parts.statistic_class
    context = 0 if isinstance(getattr(statistic, "context", 0), int) and statistic.context == 0 else 2
    grid, halo = grid_and_halo(network, layers, dict.fromkeys(layers, context))
    return RunShape(
        device=device,
        precision=str(config.trainer.get("precision", "32-true")),
        images=len(images),
        layers=layers,
        style_layers=list(dict.fromkeys(n for c in configs if loss_weights(c)[1] > 0 for n in c.style_layers)),
        table=[(name, network.channels(name), network.stride(name)) for name in network.layer_names],
        weight_bytes=sum(p.numel() * p.element_size() for p in network.parameters()),
        optimizer_state=optimizer_state_bytes(parts.optimizer),
        statistic_bytes=int(getattr(parts.statistic_class, "bytes_per_element", 0)),
        content=image_header(config.content),
        styles=[image_header(path) for path in style_paths(config)],
        at_content_side=[path for path in at_content_side if path],
        extra_channels=extra,
        style_size=config.style_size,
        style_scale=float(config.style_scale),
        content_layers=list(dict.fromkeys(c.content_layer for c in configs if loss_weights(c)[0] > 0)),
        grid=grid,
        halo=halo,
        gathered="projected" in getattr(statistic, "gathered", ()),
        metrics=bool(config.metrics),
    )


def estimate(shape: RunShape, side: int, style_side: int | None = None, scale: float = 1.0) -> int:
    """The estimated peak of the run at long side ``side`` (the style at ``style_side``; ``scale`` multiplies the
    optimiser's per-element state, to try a shorter history)."""
    style_side = style_side or shape.style_size or max(1, round(side * shape.style_scale))
    hw = resized_shape(shape.content, side)
    loads = [decode_bytes(shape.content, side), *[decode_bytes(style, style_side) for style in shape.styles]]
    loads += [decode_bytes(image_header(path), max(hw)) for path in shape.at_content_side]
    per_element, fixed = shape.optimizer_state
    return estimate_peak_bytes(
        *hw,
        layers=shape.layers,
        style_layers=shape.style_layers,
        images=shape.images,
        precision=shape.precision,
        device=shape.device,
        styles=[resized_shape(style, style_side) for style in shape.styles],
        extra_channels=shape.extra_channels,
        decode=max(loads),
        table=shape.table,
        weight_bytes=shape.weight_bytes,
        optimizer_state=(per_element * scale, fixed * scale),
        statistic_bytes=shape.statistic_bytes,
    )


def largest(fits: Any, lo: int, hi: int) -> int:
    """The largest value in [lo, hi) for which fits() holds (lo if none does)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _style_advice(shape: RunShape, long_side: int, available: int) -> list[str]:
    """Where the style images alone are too large: the style side that fits."""
    style_side = shape.style_size or max(1, round(long_side * shape.style_scale))
    if style_side <= 16 or estimate(shape, long_side, 16) > available:
        return []
    fit = largest(lambda s: estimate(shape, long_side, s) <= available, 16, style_side)
    if shape.style_size:
        return [f"lower style_size (about {fit} px fits)"]
    return [f"lower style_scale (about {fit / long_side:.2g} fits)"]


def _advice(shape: RunShape, long_side: int, available: int, history_size: int | None) -> list[str]:
    advice = _style_advice(shape, long_side, available)
    side = largest(lambda s: estimate(shape, s) <= available, 16, long_side)
    if estimate(shape, side) <= available:
        advice.append(f"lower size (about {side} px fits)")
    if history_size and history_size > 10 and estimate(shape, long_side, None, 10 / history_size) <= available:
        fit = largest(lambda h: estimate(shape, long_side, None, h / history_size) <= available, 10, history_size)
        advice.append(f"optimizer.history_size={fit}")
    if shape.images > 1:
        advice.append("fewer images in batch_sweep")
    return advice or ["free some memory"]


def _maps_bytes(shape: RunShape, height: int, width: int, layers: list[str]) -> int:
    """float32 bytes of the whole feature maps of ``layers`` at ``height`` x ``width``."""
    by_name = {name: (c, s) for name, c, s in shape.table}
    return sum(4 * by_name[n][0] * (height // by_name[n][1]) * (width // by_name[n][1]) for n in layers)


def tiled_estimate(shape: RunShape, side: int, tile: int, scale: float = 1.0) -> int:
    """The estimated peak of the run at long side ``side`` in exact tiles of ``tile`` px: a tile's features and
    backward pass (its crop: the tile and its halo), and what stays whole: the images, the optimiser's state, the
    content's targets, the gathered values of the statistic; while the targets are made, the whole feature maps
    of the largest input (model/tiles.py: TiledNetwork); and at the end the panel (``panel_bytes``)."""
    h, w = resized_shape(shape.content, side)
    crop = (min(h, tile + 2 * shape.halo), min(w, tile + 2 * shape.halo))
    per_tile = memory_parts(
        *crop,
        layers=shape.layers,
        style_layers=shape.style_layers,
        images=shape.images,
        precision=shape.precision,
        device=shape.device,
        styles=[crop],
        table=shape.table,
        weight_bytes=shape.weight_bytes,
        optimizer_state=(0.0, 0.0),
        statistic_bytes=shape.statistic_bytes,
    )
    step = sum(per_tile[k] for k in ("runtime", "weights", "activations", "gram", "style_loss"))
    held = memory_parts(
        h,
        w,
        layers=shape.layers,
        style_layers=[],
        images=shape.images,
        table=shape.table,
        extra_channels=shape.extra_channels,
        styles=_style_shapes(shape, side),
        weight_bytes=0,
    )
    per_element, fixed = shape.optimizer_state
    optimizer = int(per_element * scale * 3 * h * w * shape.images + fixed * scale)
    kept = _maps_bytes(shape, h, w, shape.content_layers) + (
        3 * _maps_bytes(shape, h, w, shape.style_layers) if shape.gathered else 0
    )
    optimisation = step + held["images"] + optimizer + kept
    largest = max([(h, w), *_style_shapes(shape, side)], key=lambda s: s[0] * s[1])
    targets = sum(per_tile[k] for k in ("runtime", "weights")) + per_tile["activations"] // 2 + held["images"]
    targets += _maps_bytes(shape, *largest, shape.layers) + _maps_bytes(shape, h, w, shape.content_layers)
    panel = per_tile["runtime"] + held["images"] + optimizer + panel_bytes(h, w) if shape.metrics else 0
    return max(optimisation, targets, panel)


def panel_bytes(height: int, width: int) -> int:
    """The end-of-run panel's own peak (its network and yardsticks), measured at a long side of at most
    ``METRIC_MAX_SIDE``: with exact tiles it can be more than a step's tile."""
    from nst_lightning.results.metrics import METRIC_MAX_SIDE

    scale = min(1.0, METRIC_MAX_SIDE / max(height, width))
    return PANEL_BYTES[0] + int(PANEL_BYTES[1] * round(height * scale) * round(width * scale))


def _style_shapes(shape: RunShape, side: int) -> list[tuple[int, int]]:
    style_side = shape.style_size or max(1, round(side * shape.style_scale))
    return [resized_shape(style, style_side) for style in shape.styles]


TILE_SIDES = (2048, 1536, 1024, 768, 512, 384, 256)  # tried largest first: larger tiles waste less in halos
# The share of the available memory a tiled run is planned into: room for what the estimate leaves out (the
# allocator's slack, the page cache a checkpoint's write fills). At 4096 px in 256 px tiles with 49 pairs the
# estimate read 17.9 GiB and the run peaked at 17.3 GiB (benchmarks/memory_phases.py, 2026-12-03, 24 GB AMD EPYC).
TILED_HEADROOM = 0.8


@dataclass(frozen=True)
class Fit:
    """What the memory plan chose: the estimated peak (None: not checked), the tile side (None: untiled), a shorter
    L-BFGS history (None: the configured one), and the one line that says so."""

    needed: int | None
    tile: int | None
    history_size: int | None = None
    said: str | None = None


def _auto(shape: RunShape, long_side: int, available: int, history: int | None, untiled: int) -> Fit | None:
    """engine.tile=auto: no tiles if the run fits whole, else the largest tile that fits, else the smallest tile with
    the longest history that fits; None if nothing fits."""
    if untiled <= available:
        return Fit(untiled, None)
    why = f"untiled, size={long_side} needs about {_gib(untiled)} but {_gib(available)} is available"
    available = int(available * TILED_HEADROOM)
    for side in (s for s in TILE_SIDES if s < long_side and s % shape.grid == 0):
        if (needed := tiled_estimate(shape, long_side, side)) <= available:
            return Fit(needed, side, None, f"engine.tile=auto: {side} px tiles ({why})")
    smallest = TILE_SIDES[-1]
    if history and tiled_estimate(shape, long_side, smallest, 1 / history) <= available:
        fit = largest(lambda n: tiled_estimate(shape, long_side, smallest, n / history) <= available, 1, history + 1)
        needed = tiled_estimate(shape, long_side, smallest, fit / history)
        said = f"engine.tile=auto: {smallest} px tiles and optimizer.history_size={fit}, the most that fits ({why})"
        return Fit(needed, smallest, fit, said)
    return None


def plan_memory(config: Any, images: list[Any], parts: Any) -> Fit:
    """The memory plan of a run: its estimated peak against the memory available; with ``engine.tile=auto`` the
    tile side (and, if even the smallest tile leaves the L-BFGS history too large, a shorter history) that fits.
    Refused (NSTError, one line) only when nothing fits, with the sizes that would.

    Every image the run decodes and feeds the network counts: the content at the output size, each style image
    at its own size (``style_size``, or ``style_scale`` x the output size) and aspect, a ``content_mask``, an
    ``init.path`` image and a ``temporal_target`` (each file's size read from its header, without decoding); so
    do the largest stage of ``scales`` and every image of ``batch_sweep``. ``NST_SKIP_MEMORY_CHECK=1`` skips it.
    """
    from nst_lightning.config.derive import stage_sizes

    tile = config.engine.tile
    device = device_of(config)
    if device is None or os.environ.get(SKIP_ENV) == "1":
        return Fit(None, tile if isinstance(tile, int) else None)
    shape = run_shape(config, images, parts, device)
    long_side = max(size for size, _ in stage_sizes(config))
    available = available_bytes(device)
    history = getattr(parts.optimizer, "keywords", {}).get("history_size")
    if isinstance(tile, int):
        needed = tiled_estimate(shape, long_side, tile)
        if available is None or needed <= available:
            return Fit(needed, tile)
        _refuse(shape, long_side, needed, available, history, device)
    untiled = estimate(shape, long_side)
    if available is None:
        return Fit(untiled, None)
    tileable = bool(getattr(parts.statistic_class, "tileable", True))  # else untiled whatever engine.tile says
    if tile == "auto" and tileable and (fit := _auto(shape, long_side, available, history, untiled)) is not None:
        return fit
    if untiled <= available:
        return Fit(untiled, None)
    _refuse(
        shape, long_side, untiled, available, history, device, tiles=tile is None or not tileable, tileable=tileable
    )
    raise AssertionError("unreachable")


def _refuse(
    shape: RunShape,
    side: int,
    needed: int,
    available: int,
    history: int | None,
    device: str,
    tiles: bool = False,
    tileable: bool = True,
) -> None:
    advice = _advice(shape, side, available, history)
    if tiles and tileable and any(tiled_estimate(shape, side, s) <= available for s in TILE_SIDES if s < side):
        advice.insert(0, "engine.tile=auto (exact tiles: the same result in less memory)")
    elif not tiles:
        fits = largest(
            lambda s: tiled_estimate(shape, s, TILE_SIDES[-1], 1 / max(history or 1, 1)) <= available, 16, side
        )
        advice = [*_style_advice(shape, side, available), f"lower size (about {fits} px fits in tiles)"]
    where = "GPU memory" if device == "cuda" else "memory"
    hw = resized_shape(shape.content, side)
    biggest = max(_style_shapes(shape, side), key=lambda s: s[0] * s[1])
    what = ""
    if biggest[0] * biggest[1] > hw[0] * hw[1]:
        what = f" (the style image at {biggest[1]}x{biggest[0]} px, larger than the {hw[1]}x{hw[0]} output)"
    raise NSTError(
        f"size={side} needs about {_gib(needed)}{what} but {_gib(available)} of {where} is available: "
        f"{', or '.join(advice)} ({SKIP_ENV}=1 tries anyway)"
    )


def check_memory(config: Any, images: list[Any], parts: Any) -> int | None:
    """``plan_memory``'s estimate: refuse (NSTError, one line) a run that cannot fit, else return its peak."""
    return plan_memory(config, images, parts).needed


def slow_precision_warning(config: Any) -> str | None:
    """The warning for half precision on a CPU without bf16/fp16 instructions (it emulates them: benchmarks/
    measured bf16-mixed 40-50x slower than 32-true there), or None where half precision is not a slowdown."""
    precision = str(config.trainer.get("precision", "32-true"))
    if precision not in HALF_PRECISIONS or device_of(config) != "cpu" or native_bf16_cpu():
        return None
    return (
        f"trainer.precision={precision} on a CPU without bf16 instructions (AMX / AVX512-BF16) is emulated and "
        "much slower than 32-true (40-50x in benchmarks/README.md); use it on a GPU or such a CPU"
    )


BF16_TIP_MIN_SIZE = 256  # below it a step is short and the gain was not measured


def bf16_tip(config: Any) -> str | None:
    """A tip for a float32 run of at least ``BF16_TIP_MIN_SIZE`` px on a CPU with AMX, where bf16-mixed is
    measured faster with the same final loss within 1% (benchmarks/README.md); None elsewhere. The default
    stays float32: a run's numbers should not depend on which CPU it landed on."""
    from nst_lightning.config.derive import stage_sizes

    precision = str(config.trainer.get("precision", "32-true"))
    if precision not in ("32-true", "32") or device_of(config) != "cpu" or "amx_bf16" not in cpu_flags():
        return None
    if max(size for size, _ in stage_sizes(config)) < BF16_TIP_MIN_SIZE:
        return None
    return (
        "this CPU has AMX bf16 instructions: trainer.precision=bf16-mixed runs the network in bf16 (Gram matrices "
        "and losses stay float32), about 2x faster per step here (benchmarks/README.md)"
    )
