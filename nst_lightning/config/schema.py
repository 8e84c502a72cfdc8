"""Structured configs: the types and defaults Hydra validates every override against, and the plan of a run.

``conf/config.yaml`` composes ``Config`` with the groups: the pluggable parts (``network``, ``style_loss``,
``optimizer``, ``logger``) are ``_target_`` nodes made from their constructors (config/nodes.py; registered in
nst_lightning/apps/presets.py), ``init`` is ``InitConfig``. Choices are Enums, so Hydra itself refuses a value that
is not one of them. What Hydra's types cannot express (layer names, list lengths, sensible numbers) is checked in
config/validate.py. A run reads ``OmegaConf.to_object`` of the composed config: this typed ``Config`` is its plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from nst_lightning.util.errors import NSTError

DEFAULT_STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
SETTINGS_VERSION = 2  # 1: the records of runs before the pluggable parts (style_loss.name, network.source, ...)


class Choice(str, Enum):
    """A choice of the config: Hydra checks the value; str() and f-strings give the value, as typed."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class InitKind(Choice):
    noise = "noise"  # mid-grey plus uniform noise of amplitude init.scale (1: the paper's white noise in [0, 1])
    content = "content"
    style = "style"
    image = "image"


class StyleWeighting(Choice):
    """w_l when style_weights is not given."""

    equal = "equal"  # 1/L each: the paper
    channels = "channels"  # proportional to 1/N_l^2, summing to 1: jcjohnson/neural-style's effective weights


class PreserveColor(Choice):
    none = "none"
    luminance = "luminance"  # transfer on Y, content's colours
    histogram = "histogram"  # recolour the style to the content's statistics first


class ColorTarget(Choice):
    content = "content"
    style = "style"


@dataclass
class InitConfig:
    kind: InitKind = InitKind.noise
    path: str | None = None  # kind=image: the image to start from
    # kind=noise: amplitude around mid-grey (1: the paper's uniform [0, 1]). 0.01 is measured: at 256 px after 200
    # steps it leaves 25x less grain in the photo's flat areas than 1, and the lowest final loss
    # (experiments/quality_grain.json). The study presets use 1, as the paper.
    scale: float = 0.01


@dataclass
class EngineConfig:
    """How a step runs on the device (never what it computes)."""

    cuda_graph: bool = True  # CUDA: capture forward, backward and update once, then replay (no Python per step)
    tf32: bool = True  # CUDA: TF32 convolutions (10-bit mantissa products, fp32 sums); matmuls stay fp32
    log_every: int = 10  # losses leave the device every N steps (every step is still logged)
    # last.ckpt (image + L-BFGS history: 2 x history_size images) every N steps (0: not by steps), and at least every
    # checkpoint_minutes: a hard kill loses at most that much, and writing costs well under 1% of the run's time.
    checkpoint_every: int = 0
    checkpoint_minutes: float = 5.0
    # Exact tiles (nst_lightning/model/tiles.py): the loss and gradient of the whole image from tiles of this many
    # pixels (a side), the memory bounded by the tile; "auto": untiled where the run fits, else the memory plan picks
    # the tile (a statistic that cannot tile runs untiled); null: untiled, refused where it does not fit.
    tile: Any = "auto"


@dataclass
class BatchSweep:
    """``batch_sweep.ratio=[1e-2,1e-3] batch_sweep.seed=[0,1]``: K images sharing content, style, size, network
    and optimiser, optimised together (one batched forward/backward, one optimiser state per image).
    Every list given must have the same length K; image k takes the k-th value of each."""

    ratio: list[float] | None = None
    style_weight: list[float] | None = None
    content_weight: list[float] | None = None
    content_layer: list[str] | None = None
    style_layers: list[list[str]] | None = None
    style_weights: list[list[Any]] | None = None  # Any: OmegaConf refuses [[1,2]] as List[List[float]]
    tv_weight: list[float] | None = None
    color_weight: list[float] | None = None
    init: list[InitKind] | None = None  # init.kind of each image
    init_scale: list[float] | None = None  # init.scale of each image
    seed: list[int] | None = None


@dataclass
class Config:
    content: str = "grace_hopper"  # image path or built-in name
    style: Any = "brushstrokes"  # image path or built-in name, or several: style=[a.jpg,b.jpg]
    style_blend: list[float] | None = None  # how much each style counts; None: equal; normalised to sum 1
    size: int = 256  # long side of the generated image, pixels
    style_size: int | None = None  # long side of the style image(s) in pixels; None: style_scale * size
    style_scale: float = 1.0  # style image size relative to the output (smaller: finer brush strokes)
    content_layer: str = "conv4_2"
    style_layers: list[str] = field(default_factory=lambda: list(DEFAULT_STYLE_LAYERS))
    style_weights: list[float] | None = None  # w_l; None: set by style_weighting
    style_weighting: StyleWeighting = StyleWeighting.channels  # w_l when style_weights is None
    style_loss: Any = MISSING  # the style statistic compared (group; gram: the paper's; model/statistics.py)
    ratio: float = 2e-4  # alpha/beta, meant at reference_size: jcjohnson/neural-style's balance (1.94e-4)
    style_weight: float = 1.0  # beta; alpha = ratio * beta
    content_weight: float | None = None  # alpha given directly (e.g. content-only with style_weight=0)
    # L_content sums over positions, E_l does not: alpha is scaled by (reference_size / size)^2 so that one ratio
    # gives one look at every size. null: the paper's exact objective at every size (the study presets).
    reference_size: int | None = 256
    tv_weight: float = 250.0  # total-variation smoothness (not in the paper; recipe=paper sets 0)
    color_weight: float = 0.0  # match the RGB mean and covariance of color_target (the notes' L_couleur)
    color_target: ColorTarget = ColorTarget.content
    preserve_color: PreserveColor = PreserveColor.none
    content_mask: str | None = None  # grey image: style where white, content where black
    scales: list[int] | None = None  # coarse-to-fine long sides, e.g. [256,512]; the last is the output size
    scale_steps: list[int] | None = None  # steps per stage; None: `steps` for each
    temporal_weight: float = 0.0  # video: stay close to temporal_target (the previous stylised frame)
    temporal_target: str | None = None
    batch_sweep: BatchSweep = field(default_factory=lambda: BatchSweep())  # K images optimised as one batch
    steps: int = 300  # optimisation steps: one forward+backward each
    seed: int = 0
    snapshot_every: int = 50  # snapshot PNG + TensorBoard image every N steps (0: none)
    metrics: bool = True  # at the end: the objective-independent panel (results/metrics.py) in metrics.json
    resume: str | None = None  # a run folder stopped early (or killed): continue it with its own settings
    network: Any = MISSING  # group: the frozen network (model/vgg.py; model/network.py for your own)
    init: InitConfig = MISSING
    optimizer: Any = MISSING  # group: lbfgs (optim/lbfgs.py) or adam (torch.optim.Adam)
    logger: Any = MISSING  # group: where each image's losses, snapshots and HParams go (tensorboard, csv, ...)
    callbacks: dict[str, Any] = field(default_factory=dict)  # Lightning callbacks (_target_ nodes) added to the run
    extra_terms: dict[str, Any] = field(default_factory=dict)  # image-level loss terms (_target_ nodes), added
    engine: EngineConfig = field(default_factory=lambda: EngineConfig())
    trainer: dict[str, Any] = field(
        default_factory=lambda: {
            "accelerator": "auto",
            "devices": 1,
            "strategy": "auto",
            "precision": "32-true",
            "enable_progress_bar": True,
        }
    )
    settings_version: int = SETTINGS_VERSION  # what a run's record holds; config/records.py migrates older ones


def conf_dir() -> Path:
    """conf/ inside an installed wheel (force-included), else the clone's top-level conf/."""
    here = Path(__file__).resolve().parent.parent  # the package's folder
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise NSTError(f"cannot find the Hydra configs (conf/config.yaml) next to {here}: reinstall nst-lightning")
