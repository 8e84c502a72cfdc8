"""StyleTransfer: a LightningModule whose only trainable parameter is the generated image.

The frozen VGG19 and the content/style images are held outside the module's registered state, so a
checkpoint is the image and the optimiser (a few MB), never the network. Targets P (content) and
A/M (style Gram matrices) are computed once, on the run's device, before the first step.

One Lightning step is one evaluation of loss and gradient: L-BFGS runs with ``max_iter=1`` and no line
search, and keeps its history between steps, so ``steps`` counts forward+backward passes, the unit of
cost that every peer reports.

The image may hold K > 1 images (a batched sweep): they share one forward/backward through the network,
but each has its own loss weights and its own optimiser state (``PerImage``), so each follows exactly the
trajectory of its own separate run.

The optimiser is handed L / L_0 (L_0: the image's total loss at the first step). Same minimiser, and
L-BFGS's quasi-Newton steps are invariant to that scale; but its first step and its fallback when a
curvature pair is rejected (y's <= 0, common at a white-noise start) are plain gradient steps of length
``lr``, which at the paper's loss magnitudes (1e8-1e10) throw pixels to 1e7. Unit-free, they stay small.
Everything logged is the paper's unscaled L.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from nst_lightning.color import with_chroma
from nst_lightning.losses import (
    color_loss,
    content_loss,
    gram_over_m,
    style_layer_loss,
    temporal_loss,
    total_variation,
)
from nst_lightning.vgg import VGG19Features


@dataclass(frozen=True)
class LossWeights:
    """The loss weights of one generated image: total = alpha L_content + beta L_style + tv L_tv + ..."""

    content_layer: str
    style_weights: dict[str, float]  # w_l
    alpha: float
    beta: float
    tv: float = 0.0
    color: float = 0.0
    temporal: float = 0.0


@dataclass
class Inputs:
    """What the module uses but never trains nor checkpoints (a plain object: nn.Module won't register it)."""

    network: VGG19Features
    content: Tensor  # (1, 3, H, W), as optimised: grey when only the luminance is transferred
    styles: list[Tensor]  # one or several style images, each (1, 3, h, w)
    style_blend: list[float]  # how much each style counts, summing to 1
    mask: Tensor | None = None  # (1, 1, H, W) in [0, 1]: where the style goes (content_mask)
    chroma: Tensor | None = None  # the content in colour, when only the luminance is transferred
    temporal_target: Tensor | None = None  # (1, 3, H, W): the frame to stay close to (video)
    content_targets: dict[str, Tensor] = field(default_factory=dict)  # P^l per content layer in use
    style_targets: dict[str, Tensor] = field(default_factory=dict)  # blended A^l / M_l per style layer
    color_target: tuple[Tensor, Tensor] | None = None  # RGB mean (1, 3) and covariance (1, 3, 3) to match

    def to(self, device: torch.device) -> None:
        self.network.to(device)
        for name in ("content", "mask", "chroma", "temporal_target"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        self.styles = [s.to(device) for s in self.styles]
        if self.color_target is not None:
            self.color_target = (self.color_target[0].to(device), self.color_target[1].to(device))


class PerImage(torch.optim.Optimizer):
    """K independent optimisers, one per image of the batch, stepped together from one batched backward.

    Each inner optimiser owns a view of its image (sharing memory with the module's parameter), so its
    L-BFGS history holds only that image's curvature pairs: K images in one batch follow the K trajectories
    of K separate runs. ``step``'s closure returns the K losses; an image whose loss is not finite is skipped.
    """

    def __init__(self, image: nn.Parameter, make: Callable[[list[Tensor]], torch.optim.Optimizer]) -> None:
        super().__init__([image], {})
        self.image = image
        self.views = [image.detach()[k : k + 1].requires_grad_() for k in range(image.shape[0])]
        self.inner = [make([view]) for view in self.views]

    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        with torch.enable_grad():
            losses = closure()  # (K,), gradients already in image.grad
        for k, (view, inner) in enumerate(zip(self.views, self.inner, strict=True)):
            if torch.isfinite(losses[k]) and self.image.grad is not None:
                view.grad = self.image.grad[k : k + 1]
                inner.step(lambda loss=losses[k]: loss)  # one evaluation per step: the one just made
        return losses.detach().sum()

    def state_dict(self) -> dict:
        return {"per_image": [inner.state_dict() for inner in self.inner]}

    def load_state_dict(self, state_dict: dict) -> None:
        for inner, state in zip(self.inner, state_dict["per_image"], strict=True):
            inner.load_state_dict(state)


class StyleTransfer(L.LightningModule):
    def __init__(
        self,
        inputs: Inputs,
        init_image: Tensor,
        weights: Sequence[LossWeights],
        optimizer: str = "lbfgs",
        lr: float = 1.0,
        history_size: int = 100,
        betas: tuple[float, float] = (0.9, 0.999),
        steps: int = 300,
    ) -> None:
        super().__init__()
        if init_image.shape[0] != len(weights):
            raise ValueError(f"{init_image.shape[0]} initial images but {len(weights)} sets of loss weights")
        self.image = nn.Parameter(init_image.detach().float().contiguous().clone())
        self.frozen = inputs
        self.weights = list(weights)
        self.optimizer_name, self.lr, self.history_size, self.betas = optimizer, lr, history_size, tuple(betas)
        self.steps = steps
        self.automatic_optimization = False  # the closure below is the whole step
        self.last_losses: dict[str, Tensor] = {}
        self.last_finite_image = self.image.detach().clone()
        self.diverged_at: list[int | None] = [None] * len(self.weights)
        self.loss_scale: list[float] | None = None  # L_0 per image, set by the first evaluation
        self.targets_ready = False
        # Per-image weights as (K,) tensors, and the style weights as (K, layers), zero where a layer is unused.
        self.style_layers = list(dict.fromkeys(n for w in self.weights if w.beta > 0 for n in w.style_weights))
        self.content_layers = list(dict.fromkeys(w.content_layer for w in self.weights if w.alpha > 0))

    @property
    def num_images(self) -> int:
        return self.image.shape[0]

    def _per_image(self, values: list[float]) -> Tensor:
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    # ---- targets ---------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_targets(self) -> None:
        """P^l from the content image and the blended A^l/M_l of the style images, once, in float32.

        Several styles: A^l = sum_i b_i A_i^l. For blends summing to 1, sum_i b_i |G - A_i|^2 equals
        |G - sum_i b_i A_i|^2 plus a constant, so this is the blend of the styles' losses, at one Gram
        comparison per layer.
        """
        f = self.frozen
        f.to(self.device)
        # A term weighted 0 is not computed at all; its layers may not even be in the cut network.
        if self.content_layers:
            content_features = f.network(f.content)
            f.content_targets = {name: content_features[name].float() for name in self.content_layers}
        if self.style_layers:
            f.style_targets = {}
            for blend, style in zip(f.style_blend, f.styles, strict=True):
                features = f.network(style)
                for name in self.style_layers:
                    a = blend * gram_over_m(features[name])[0]
                    f.style_targets[name] = f.style_targets[name] + a if name in f.style_targets else a
        self.targets_ready = True

    def on_fit_start(self) -> None:
        self.compute_targets()
        self.last_finite_image = self.image.detach().clone()

    # ---- checkpoints: the image and optimiser come from Lightning; L_0 from here --------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["nst"] = {"loss_scale": self.loss_scale}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.loss_scale = checkpoint.get("nst", {}).get("loss_scale")

    # ---- the image the losses see, and the one the user gets -------------------------------------
    def generated(self, image: Tensor) -> Tensor:
        """With a content_mask, the optimised pixels count only where the mask is white; the rest is the content."""
        mask = self.frozen.mask
        return image if mask is None else mask * image + (1 - mask) * self.frozen.content

    @torch.no_grad()
    def result(self) -> Tensor:
        """The images to show and save, (K, 3, H, W) in [0, 1]: masked, and recoloured when only the
        luminance was transferred."""
        image = self.generated(self.image.detach().float())
        if self.frozen.chroma is not None:
            image = with_chroma(image, self.frozen.chroma.to(image.device))
        return image.clamp(0, 1)

    def _layer_mask(self, features: Tensor) -> Tensor | None:
        mask = self.frozen.mask
        return None if mask is None else F.adaptive_avg_pool2d(mask, features.shape[-2:])

    # ---- the losses ------------------------------------------------------------------------------
    def losses(self, image: Tensor) -> dict[str, Tensor]:
        """alpha L_content + beta L_style (+ tv, colour, temporal) for the K images; each entry has shape (K,).

        A term whose weight is 0 for every image is not computed (its layers may not even be in the cut
        network): its key is then absent.
        """
        f, weights = self.frozen, self.weights
        x = self.generated(image)
        features = f.network(x)
        k = x.shape[0]
        out: dict[str, Tensor] = {}
        total = torch.zeros(k, device=x.device)
        # Gram matrices and sums stay float32 even under bf16 autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            if f.content_targets:
                content = torch.zeros(k, device=x.device)
                for name, target in f.content_targets.items():
                    rows = [i for i, w in enumerate(weights) if w.content_layer == name]
                    content[rows] = content_loss(features[name][rows], target)
                out["content"] = content
                total = total + self._per_image([w.alpha for w in weights]) * content
            per_layer = {
                name: style_layer_loss(features[name], target, self._layer_mask(features[name]))
                for name, target in f.style_targets.items()
            }
            if per_layer:
                out["style"] = torch.zeros(k, device=x.device)
                for name, loss in per_layer.items():
                    out["style"] = (
                        out["style"] + self._per_image([w.style_weights.get(name, 0.0) for w in weights]) * loss
                    )
                total = total + self._per_image([w.beta for w in weights]) * out["style"]
            extras = {
                "tv": (any(w.tv for w in weights), lambda: total_variation(x), [w.tv for w in weights]),
                "color": (
                    f.color_target is not None,
                    lambda: color_loss(x, *f.color_target),
                    [w.color for w in weights],
                ),
                "temporal": (
                    f.temporal_target is not None,
                    lambda: temporal_loss(x, f.temporal_target),
                    [w.temporal for w in weights],
                ),
            }
            for key, (wanted, compute, term_weights) in extras.items():
                if wanted:
                    out[key] = compute()
                    total = total + self._per_image(term_weights) * out[key]
            out["total"] = total
            out.update({f"style/{name}": value for name, value in per_layer.items()})
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, list[float]]:
        """Losses of the current images, as one Python float per image (used for the final metrics)."""
        if not self.targets_ready:
            self.compute_targets()
        return {key: value.tolist() for key, value in self.losses(self.image.to(self.device)).items()}

    # ---- optimisation ----------------------------------------------------------------------------
    def _make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        if self.optimizer_name == "lbfgs":
            # tolerance -1: never stop early on our own; `steps` is exactly what runs.
            return torch.optim.LBFGS(
                params, lr=self.lr, max_iter=1, history_size=self.history_size, tolerance_grad=-1, tolerance_change=-1
            )
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return PerImage(self.image, self._make_optimizer)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps), batch_size=None)  # one item per step; the data is the image

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        opt = self.optimizers()
        active = torch.tensor([d is None for d in self.diverged_at], device=self.device)

        def closure() -> Tensor:
            opt.zero_grad()
            losses = self.losses(self.image)
            total = losses["total"]
            finite = torch.isfinite(total) & active
            if self.loss_scale is None:
                self.loss_scale = [max(v, 1e-30) if v == v else 1.0 for v in total.detach().tolist()]
            # Each image's gradient is that of its own L/L_0; a non-finite one gets none (and no step).
            scale = torch.tensor(self.loss_scale, device=total.device)
            self.manual_backward(torch.where(finite, total / scale, torch.zeros_like(total)).sum())
            with torch.no_grad():
                self.last_finite_image[finite] = self.image.detach()[finite]
            self.last_losses = losses
            return torch.where(active, total.detach(), torch.full_like(total, float("nan")))

        opt.step(closure=closure)
        total = self.last_losses["total"].detach()
        for i in torch.nonzero(active & ~torch.isfinite(total)).flatten().tolist():
            self.diverged_at[i] = self.global_step
            with torch.no_grad():
                self.image[i] = self.last_finite_image[i]
        if all(d is not None for d in self.diverged_at):
            self.trainer.should_stop = True
        # No self.log here: TensorBoard gets every image's losses from callbacks.LossCurves and the progress
        # bar reads last_losses; each self.log call costs ~1.5 ms of Lightning bookkeeping per step.

    def image_losses(self, losses: dict[str, Tensor], k: int) -> dict[str, float]:
        """Image k's share of a batch's losses, as floats, keeping only the terms that image weights."""
        w = self.weights[k]
        wanted = {
            "total": True,
            "content": w.alpha > 0,
            "style": w.beta > 0,
            "tv": w.tv > 0,
            "color": w.color > 0,
            "temporal": w.temporal > 0,
        }
        out = {key: float(losses[key][k]) for key, keep in wanted.items() if keep and key in losses}
        if w.beta > 0:
            out.update({f"style/{n}": float(losses[f"style/{n}"][k]) for n, v in w.style_weights.items() if v > 0})
        return out
