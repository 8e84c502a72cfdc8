"""StyleTransfer: a LightningModule whose only trainable parameter is the generated image.

One Lightning step is one evaluation of the objective and its gradient, then one optimiser update: ``steps``
counts forward+backward passes, the unit every peer reports. The image may hold K > 1 images (a batched sweep):
they share one forward/backward through the network, and the optimiser keeps one history per image, so each
follows the trajectory of its own separate run.

The step never waits for the device. Finiteness, divergence (the step an image's loss stopped being finite), the
last finite image and the losses of the last ``log_every`` steps are device tensors, updated with ``torch.where``
and indexed by a device step counter; the callbacks copy the losses out every ``log_every`` steps. On CUDA the
step is captured once in a CUDA graph after a few eager warm-up steps and replayed from then on.

The frozen network and the targets live in the ``Objective``, held outside the module's registered state: a
checkpoint is the image, the optimiser and the divergence record (a few MB), never the network.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from nst_lightning.config.schema import EngineConfig
from nst_lightning.model import tiles
from nst_lightning.model.color import with_chroma
from nst_lightning.model.objective import Objective

if TYPE_CHECKING:
    from nst_lightning.engine.distributed import Share

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps before a CUDA graph capture: allocations and cuDNN autotuning happen there


@dataclass
class Held:
    """What the module uses but never trains nor checkpoints (a plain object: nn.Module won't register it)."""

    objective: Objective
    chroma: Tensor | None = None  # the content in colour, when only the luminance is transferred
    prepared: Any = None  # the stage's images, as compared against (inputs.prepare.Prepared; for the panel, tests)


class Stepper(torch.optim.Optimizer):
    """What Lightning sees as the optimiser: its step is the module's whole step (evaluate, update, bookkeeping),
    eager or a CUDA graph replay; its state is the real optimiser's, so checkpoints hold that. (Lightning counts
    ``global_step`` by optimiser steps; a CUDA graph replays the update with the evaluation, so the one step
    Lightning calls must be the whole of it.)"""

    def __init__(self, image: nn.Parameter, inner: torch.optim.Optimizer) -> None:
        super().__init__([image], {})
        self.inner = inner

    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        return closure()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.inner.load_state_dict(state_dict)


class StyleTransfer(L.LightningModule):
    def __init__(
        self,
        objective: Objective,
        init_image: Tensor,
        optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
        steps: int,
        engine: EngineConfig | None = None,
        chroma: Tensor | None = None,
    ) -> None:
        super().__init__()
        k = init_image.shape[0]
        if k != objective.alpha.shape[0]:
            raise ValueError(f"{k} initial images but {objective.alpha.shape[0]} sets of loss weights")
        self.image = nn.Parameter(init_image.detach().float().contiguous().clone())
        self.held = Held(objective, chroma)
        self.make_optimizer = optimizer
        self.steps = steps
        self.engine = engine or EngineConfig()
        self.automatic_optimization = False  # the Stepper's closure is the whole step
        self.logged = [logged_terms(objective, i) for i in range(k)]
        terms = len(objective.terms_order)
        self.register_buffer("active", torch.ones(k, dtype=torch.bool))
        self.register_buffer("diverged_at", torch.full((k,), -1, dtype=torch.long))
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_finite", self.image.detach().clone(), persistent=False)
        self.register_buffer("loss_log", torch.zeros(self.engine.log_every, terms, k), persistent=False)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.tiling: tiles.Tiling | None = None  # set by the engine: evaluate the image in exact tiles
        self.reduce: tiles.Reduce | None = None  # set by the engine: several processes share the tiles
        self.share: Share | None = None  # set by take_share: several processes share the batch's images
        self.eager_steps = 0

    @property
    def objective(self) -> Objective:
        return self.held.objective

    @property
    def num_images(self) -> int:
        return self.image.shape[0]

    def on_fit_start(self) -> None:
        self.objective.to(self.device)
        self.last_finite.copy_(self.image.detach())

    # ---- the image the user gets ---------------------------------------------------------------------------
    @torch.no_grad()
    def result(self) -> Tensor:
        """The images to show and save, (K, 3, H, W) in [0, 1]: masked, and recoloured when only the luminance
        was transferred."""
        image = self.objective.generated(self.image.detach().float())
        if self.held.chroma is not None:
            image = with_chroma(image, self.held.chroma.to(image.device))
        return image.clamp(0, 1)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Tensor]:
        """The terms of the current images (K,) each, on the CPU (for the final metrics)."""
        self.objective.to(self.image.device)
        if self.tiling is not None:
            terms = tiles.values(self.objective, self.image, self.tiling, self.reduce)
        else:
            terms = self.objective(self.image)
        return {key: value.detach().cpu() for key, value in terms.items()}

    # ---- optimisation --------------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        inner = self.make_optimizer([self.image])
        if self.image.device.type == "cuda":
            # capturable (torch's Adam and others): the step count stays on the GPU (no host read per step, and a
            # CUDA graph can hold it).
            for group in inner.param_groups:
                if "capturable" in group:
                    group["capturable"] = True
        self.inner_optimizer = inner
        return Stepper(self.image, inner)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps), batch_size=None)  # one item per step; the data is the image

    def _closure(self) -> Tensor:
        """Evaluate the K losses and their gradients; a non-finite or diverged image contributes no gradient."""
        self.inner_optimizer.zero_grad(set_to_none=False)  # gradients stay in place: a CUDA graph reads them there
        if self.tiling is not None:  # the same loss and gradient from tiles (model/tiles.py)
            terms = tiles.value_and_grad(
                self.objective, self.image, self.tiling, lambda t: torch.isfinite(t) & self.active, self.reduce
            )
            finite = torch.isfinite(terms["total"]) & self.active
        else:
            terms = self.objective(self.image)
            finite = torch.isfinite(terms["total"]) & self.active
            torch.where(finite, terms["total"], torch.zeros_like(terms["total"])).sum().backward()
        total = terms["total"]
        with torch.no_grad():
            keep = finite.view(-1, 1, 1, 1)
            self.last_finite.copy_(torch.where(keep, self.image.detach(), self.last_finite))
            row = (self.step_count % self.engine.log_every).view(1)
            self.loss_log.index_copy_(0, row, self.objective.stacked(terms)[None])
            self.step_count.add_(1)
        return torch.where(self.active, total.detach(), torch.full_like(total, float("nan")))

    def _eager_step(self) -> None:
        """One evaluation and one update, with no host read: divergence is recorded and undone on the device."""
        total = self.inner_optimizer.step(self._closure)
        with torch.no_grad():
            # a non-finite loss, or an update that left a non-finite pixel (else that image would be put back to
            # its last finite state at every step, forever, and never reported)
            stepped_to = torch.isfinite(self.image).flatten(1).all(1)
            broken = self.active & ~(torch.isfinite(total) & stepped_to)
            self.diverged_at.copy_(torch.where(broken, self.step_count - 1, self.diverged_at))
            self.active.logical_and_(~broken)
        self.restore_broken(stepped_to)

    def release_optimiser(self) -> None:
        """Free the optimiser's state (L-BFGS: 2 m images per image) and the captured step, once no step follows:
        the end-of-run measures run in that memory instead of on top of it."""
        self.graph = None
        if (optimiser := getattr(self, "inner_optimizer", None)) is not None:  # None: stopped before the first step
            optimiser.state.clear()

    @torch.no_grad()
    def restore_broken(self, finite: Tensor | None = None) -> None:
        """A diverged image, or one left non-finite by an aborted step, goes back to its last finite state.
        ``finite``: which images have only finite pixels, if the caller has it already."""
        if finite is None:
            finite = torch.isfinite(self.image).flatten(1).all(1)
        keep = (self.active & finite).view(-1, 1, 1, 1)
        self.image.copy_(torch.where(keep, self.image, self.last_finite))

    def _graph_step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.eager_steps < WARMUP_STEPS:  # warm up on a side stream, as CUDA graph capture requires
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._eager_step()
            torch.cuda.current_stream().wait_stream(stream)
            self.eager_steps += 1
            return
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._eager_step()
        except RuntimeError as exc:  # an op that cannot be captured: stay eager, correctly
            log.warning("CUDA graph capture failed (%s): running eagerly", str(exc).splitlines()[0])
            self.engine = dataclasses.replace(self.engine, cuda_graph=False)
            self._eager_step()
            return
        self.graph = graph
        graph.replay()  # capture records the step without running it

    def _step(self) -> None:
        # a graph would replay one draw; tiles loop in Python over the tiles
        graphable = self.engine.cuda_graph and not self.objective.draws_per_step and self.tiling is None
        if graphable and self.image.device.type == "cuda":
            self._graph_step()
        else:
            self._eager_step()

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        self.objective.begin_step(self.trainer.global_step, self.num_images)
        self.optimizers().step(closure=self._step)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.graph, self.eager_steps = None, 0
        if self.share is not None:  # the checkpoint holds the whole batch: this rank's images' part of it
            self._map_state(checkpoint, self.share.own_state)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.share is not None:  # every rank calls this (Lightning's save), rank 0 writes: the whole batch
            self._map_state(checkpoint, self.share.whole_state)

    @staticmethod
    def _map_state(checkpoint: dict, change: Callable[[dict], dict]) -> None:
        checkpoint["state_dict"] = change(checkpoint["state_dict"])
        for optimiser in checkpoint.get("optimizer_states", []):
            optimiser["state"] = {key: change(state) for key, state in optimiser["state"].items()}

    # ---- several processes ---------------------------------------------------------------------------------
    def take_share(self, share: Share) -> None:
        """Optimise only this rank's images of the batch (``share.part``); ``logged`` stays the whole batch's,
        for what rank 0 writes of it."""
        part = share.part
        self.objective.keep_images(part)
        self.image = nn.Parameter(self.image.detach()[part].clone())
        for name in ("active", "diverged_at", "last_finite"):
            setattr(self, name, getattr(self, name)[part].clone())
        self.loss_log = self.loss_log[..., part].clone()
        self.share = share

    def whole(self, tensor: Tensor, dim: int = 0) -> Tensor:
        """``tensor`` of this rank's images (along ``dim``) for the whole batch: gathered from every rank where the
        batch is split (a collective: every rank calls it), ``tensor`` itself otherwise."""
        return tensor if self.share is None else self.share.whole(tensor, dim)

    # ---- what leaves the device ----------------------------------------------------------------------------
    def image_losses(self, terms: dict[str, Tensor], k: int) -> dict[str, float]:
        """Image k's share of a batch's losses, as floats, keeping only the terms that image weights."""
        return {key: float(terms[key][k]) for key in self.logged[k] if key in terms}


def logged_terms(objective: Objective, k: int) -> list[str]:
    """The terms image k weights (total always): a term weighted 0 for it is not reported for it."""
    weights = {"content": float(objective.alpha[k]) if objective.content_layers else 0.0}
    weights["style"] = float(objective.beta[k]) if objective.style_layers else 0.0
    for i, name in enumerate(objective.extras):
        weights[name] = float(objective.extra_w[k, i])
    for i, layer in enumerate(objective.style_layers):
        weights[f"style/{layer}"] = weights["style"] * float(objective.style_w[k, i])
    return [name for name in objective.terms_order if name == "total" or weights.get(name, 0.0) > 0]
