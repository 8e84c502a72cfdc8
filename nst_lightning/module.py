"""StyleTransfer: a LightningModule whose only trainable parameter is the generated image.

The frozen VGG19 and the content/style images are held outside the module's registered state, so a
checkpoint is the image and the optimiser (a few MB), never the network. Targets P (content) and
A/M (style Gram matrices) are computed once, on the run's device, before the first step.

One Lightning step is one evaluation of loss and gradient: L-BFGS runs with ``max_iter=1`` and no line
search, and keeps its history between steps, so ``steps`` counts forward+backward passes, the unit of
cost that every peer reports.

The optimiser is handed L / L_0 (L_0: the total loss at the first step). Same minimiser, and L-BFGS's
quasi-Newton steps are invariant to that scale; but its first step and its fallback when a curvature
pair is rejected (y's <= 0, common at a white-noise start) are plain gradient steps of length ``lr``,
which at the paper's loss magnitudes (1e8-1e10) throw pixels to 1e7. Unit-free, they stay small.
Everything logged is the paper's unscaled L.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from nst_lightning.losses import content_loss, gram_over_m, style_layer_loss, style_loss, total_variation
from nst_lightning.vgg import VGG19Features


@dataclass
class Frozen:
    """What the module uses but never trains nor checkpoints (a plain object: nn.Module won't register it)."""

    network: VGG19Features
    content: Tensor
    style: Tensor
    content_target: Tensor | None = None  # P^l, features of the content image
    style_targets: dict[str, Tensor] = field(default_factory=dict)  # A^l / M_l per style layer


class StyleTransfer(L.LightningModule):
    def __init__(
        self,
        network: VGG19Features,
        content: Tensor,
        style: Tensor,
        init_image: Tensor,
        content_layer: str,
        style_weights: dict[str, float],
        alpha: float,
        beta: float,
        tv_weight: float = 0.0,
        optimizer: str = "lbfgs",
        lr: float = 1.0,
        history_size: int = 100,
        betas: tuple[float, float] = (0.9, 0.999),
        steps: int = 300,
    ) -> None:
        super().__init__()
        self.image = nn.Parameter(init_image.detach().float().contiguous().clone())
        self.frozen = Frozen(network, content, style)
        self.content_layer = content_layer
        self.style_weights = dict(style_weights)
        self.alpha, self.beta, self.tv_weight = alpha, beta, tv_weight
        self.optimizer_name, self.lr, self.history_size, self.betas = optimizer, lr, history_size, tuple(betas)
        self.steps = steps
        self.automatic_optimization = False  # the closure below is the whole step
        self.last_losses: dict[str, Tensor] = {}
        self.last_finite_image = self.image.detach().clone()
        self.diverged_at: int | None = None
        self.loss_scale: float | None = None  # L_0, set by the first evaluation
        self.targets_ready = False

    # ---- targets ---------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_targets(self) -> None:
        """P^l from the content image and A^l/M_l from the style image, once, in float32."""
        f = self.frozen
        f.network.to(self.device)
        f.content, f.style = f.content.to(self.device), f.style.to(self.device)
        content_features, style_features = f.network(f.content), f.network(f.style)
        # A term weighted 0 is not computed at all; its layers may not even be in the cut network.
        if self.alpha > 0:
            f.content_target = content_features[self.content_layer].float()
        if self.beta > 0:
            f.style_targets = {name: gram_over_m(style_features[name])[0] for name in self.style_weights}
        self.targets_ready = True

    def on_fit_start(self) -> None:
        self.compute_targets()
        self.last_finite_image = self.image.detach().clone()

    # ---- checkpoints: the image and optimiser come from Lightning; L_0 from here --------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["nst"] = {"loss_scale": self.loss_scale}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.loss_scale = checkpoint.get("nst", {}).get("loss_scale")

    # ---- the losses ------------------------------------------------------------------------------
    def losses(self, image: Tensor) -> dict[str, Tensor]:
        """alpha L_content + beta L_style (+ tv) for a batch of images; each entry has shape (B,).

        A term whose weight is 0 is not computed (its layers may not even be in the cut network):
        its key is then absent.
        """
        f = self.frozen
        features = f.network(image)
        out: dict[str, Tensor] = {}
        total = torch.zeros(image.shape[0], device=image.device)
        # Gram matrices and sums stay float32 even under bf16 autocast.
        with torch.autocast(device_type=image.device.type, enabled=False):
            if f.content_target is not None:
                out["content"] = content_loss(features[self.content_layer], f.content_target)
                total = total + self.alpha * out["content"]
            per_layer = {name: style_layer_loss(features[name], target) for name, target in f.style_targets.items()}
            if per_layer:
                out["style"] = style_loss(per_layer, self.style_weights)
                total = total + self.beta * out["style"]
            out["total"] = total
            if self.tv_weight:
                out["tv"] = total_variation(image)
                out["total"] = total + self.tv_weight * out["tv"]
            out.update({f"style/{name}": value for name, value in per_layer.items()})
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Losses of the current image, as Python floats (used for the final metrics)."""
        if not self.targets_ready:
            self.compute_targets()
        return {k: float(v.sum()) for k, v in self.losses(self.image.to(self.device)).items()}

    # ---- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "lbfgs":
            # tolerance -1: never stop early on our own; `steps` is exactly what runs.
            return torch.optim.LBFGS(
                [self.image],
                lr=self.lr,
                max_iter=1,
                history_size=self.history_size,
                tolerance_grad=-1,
                tolerance_change=-1,
            )
        return torch.optim.Adam([self.image], lr=self.lr, betas=self.betas)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps), batch_size=None)  # one item per step; the data is the image

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        opt = self.optimizers()

        def closure() -> Tensor:
            opt.zero_grad()
            losses = self.losses(self.image)
            total = losses["total"].sum()
            if torch.isfinite(total):
                self.last_finite_image.copy_(self.image.detach())  # into the buffer made at fit start
                if self.loss_scale is None:
                    self.loss_scale = max(float(total.detach()), 1e-30)
                self.manual_backward(total / self.loss_scale)
            else:  # leave the gradient at zero: the step changes nothing, and we stop below
                self.image.grad = torch.zeros_like(self.image)
            self.last_losses = losses
            return total

        opt.step(closure=closure)
        losses = {k: v.detach().sum() for k, v in self.last_losses.items()}
        if not torch.isfinite(losses["total"]):
            self.diverged_at = self.global_step
            self.trainer.should_stop = True
            with torch.no_grad():
                self.image.copy_(self.last_finite_image)
        for key in ("total", "content", "style"):
            if key in losses:
                self.log(f"loss/{key}", losses[key], prog_bar=True, on_step=True, on_epoch=False)
        for key, value in losses.items():
            if key.startswith("style/") or key == "tv":
                self.log(f"loss/{key}", value, on_step=True, on_epoch=False)
