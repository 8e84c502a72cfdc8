"""L-BFGS for a batch of independent images, one loss evaluation per step, scale-invariant, without host syncs.

The one parameter is the generated image, shape (K, ...): K images optimised together, each with its own history,
exactly as if each ran alone. A step is "evaluate at x_t, then move to x_{t+1}" (no line search, as in the paper's
use of L-BFGS); the curvature pair formed at step t is s = x_t - x_{t-1}, y = g_t - g_{t-1}.

Direction (Nocedal 1980; Nocedal & Wright, Numerical Optimization, ch. 7): d = -H g, where H is the L-BFGS inverse
Hessian built from the last m accepted pairs, starting from H_0 = gamma I with gamma = s'y / y'y of the newest pair.
We evaluate H g in the compact form of Byrd, Nocedal & Schnabel (1994, "Representations of quasi-Newton
matrices and their use in limited memory methods", section 2):

    H g = gamma g + [S  gamma Y] [[R^-T (D + gamma Y'Y) R^-1,  -R^-T],  [S'g      ]
                                  [-R^-1,                        0  ]]  [gamma Y'g]

with S, Y (N x m) the pairs as columns in chronological order, R the upper triangle of S'Y and D its diagonal
(H_0 = gamma I folded in). The buffer stores the pairs as rows, in ring-buffer slots. Compared with
the two-loop recursion (2m dependent dot products and axpys), this is two batched matmuls over the history plus
small m x m triangular solves, and S'Y and Y'Y are kept up to date one row and column per step.

Why not torch.optim.LBFGS: it accepts a pair only if s'y > 1e-10 (absolute) and sizes its first step (and its
fallback) as lr * min(1, 1/|g|_1) * g, so its behaviour depends on the loss scale and the pixel units
(tests/test_lbfgs.py shows it crawling on a style loss divided by L_0 and overflowing on a raw loss scaled by
1e12). Here every safeguard is invariant to the loss scale (L and c L give the same iterates) and expressed in pixel
units:

- a pair is accepted only if s'y > curvature_eps |s| |y| (a cosine, scale-free);
- a step without curvature information (an image's first, or while it has no accepted pair) is steepest descent
  sized so that the largest pixel change is `first_step`, doubled after each such step that lowered the loss but
  found no positive curvature (a concave start, where a fixed step would crawl);
- no pixel moves more than `max_step` in one step (the whole direction is scaled down), which keeps an exploding
  start finite.

Everything per image stays on the device (masks applied with torch.where, slots chosen with gather/index_put), so
step() never synchronises with the host and can be captured in a CUDA graph. Inner products are computed with
matmuls: for float32 parameters on CUDA keep TF32 matmuls off, or the curvature information drowns in rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

# Defaults, in pixel units of an RGB image in [0, 1].
# The first step moves the most-changed pixel by 2 grey levels (of 255): large enough that the first curvature pair
# measures the loss's curvature rather than float32 rounding, small enough not to overshoot from a noise start.
FIRST_STEP = 2.0 / 255.0
# A quarter of the intensity range in one step: above the steps of a run that has found its curvature, so it does
# not bind there, but it bounds the steps taken while the curvature is still badly estimated: the doubling
# steepest-descent steps of a concave start, and the first quasi-Newton steps, which otherwise overshoot (up to 20x
# the start's loss for one step from a near-flat start) or run the iterates off to where the loss overflows.
# Measured against 1.0 in benchmarks/README.md.
MAX_STEP = 0.25
# cos(s, y) below this is rounding noise, not curvature: for a quadratic with Hessian A, cos(s, A s) >=
# 2 sqrt(k) / (1 + k) with k = cond(A), so this only rejects pairs claiming a condition number beyond ~4e12, far
# past what float32 gradients resolve. Negative curvature (s'y <= 0, non-convex regions) is always rejected.
CURVATURE_EPS = 1e-6


# The history may be kept in bfloat16 (half the memory: at 4096 x 3072 px, 100 pairs are 30 GB in float32); the
# products with it are then taken a chunk of pixels at a time in the parameter's precision.
HISTORY_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
CHUNK_BYTES = 64 * 2**20  # the largest float copy of a history chunk


def _chunks(hist: Tensor) -> int:
    return max(1, CHUNK_BYTES // (4 * hist.shape[0] * hist.shape[1]))


def _times_history(vectors: Tensor, hist: Tensor) -> Tensor:
    """vectors (K, r, N) times the history's rows (K, 2m, N): (K, r, 2m), summed in the vectors' precision."""
    if hist.dtype == vectors.dtype:
        return vectors @ hist.mT
    out = torch.zeros(*vectors.shape[:2], hist.shape[1], dtype=vectors.dtype, device=vectors.device)
    step = _chunks(hist)
    for start in range(0, hist.shape[2], step):
        out += vectors[..., start : start + step] @ hist[..., start : start + step].to(vectors.dtype).mT
    return out


def _combine_history(coef: Tensor, hist: Tensor, dtype: torch.dtype) -> Tensor:
    """sum_i coef_i h_i over the history's rows: (K, N) in ``dtype``."""
    if hist.dtype == dtype:
        return (coef[:, None, :] @ hist).squeeze(1)
    out = torch.empty(hist.shape[0], hist.shape[2], dtype=dtype, device=hist.device)
    step = _chunks(hist)
    for start in range(0, hist.shape[2], step):
        out[:, start : start + step] = (coef[:, None, :] @ hist[..., start : start + step].to(dtype)).squeeze(1)
    return out


def memory_order(t: Tensor, like: Tensor) -> Tensor:
    """(K, ...) -> a view of t with the dimensions after the first in the memory order of `like`, outermost first.

    For a contiguous or channels-last image this view is contiguous, so reshaping it to (K, N) costs nothing. Any
    fixed order of an image's coordinates gives the same L-BFGS; what matters is that x and g use the same one.
    """
    dims = sorted(range(1, like.dim()), key=like.stride, reverse=True)
    return t.permute(0, *dims)


def chronological(n_pairs: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """Where each image's pairs sit in its ring buffer.

    The i-th accepted pair (counting from 0) is written to slot i % m, so after n pairs the oldest one kept is in
    slot n % m. Returns, for each image,
      order[k, c]: the slot at chronological position c (empty slots first when n < m, then oldest to newest),
      position[k, j]: the chronological position of slot j (the inverse permutation),
      valid[k, c]: whether position c holds a pair (the last min(n, m) positions do).
    """
    c = torch.arange(m, device=n_pairs.device)
    n = n_pairs[:, None]
    order = (n + c) % m
    position = (c - n) % m
    valid = c + n.clamp(max=m) >= m
    return order, position, valid


def compact_coefficients(
    sy: Tensor, yy: Tensor, s_g: Tensor, y_g: Tensor, gamma: Tensor, n_pairs: Tensor
) -> tuple[Tensor, Tensor]:
    """Byrd-Nocedal-Schnabel: coefficients (p, q), shape (K, m) in slot order, with H g = gamma g + S p + Y q.

    sy[k, i, j] = s_i'y_j and yy[k, i, j] = y_i'y_j by slot; s_g = S g and y_g = Y g by slot; gamma (K,).
    Writing u = R^-1 S'g, the compact form above reads
        H g = gamma g + S R^-T ((D + gamma Y'Y) u - gamma Y'g) - gamma Y u.
    Empty slots contribute nothing: their rows and columns of R are the identity's and their entries of S'g, Y'g
    and Y'Y are zero, so their u and p are zero.
    """
    m = sy.shape[-1]
    order, position, valid = chronological(n_pairs, m)
    rows, cols = order[:, :, None].expand(-1, -1, m), order[:, None, :].expand(-1, m, -1)
    both = valid[:, :, None] & valid[:, None, :]
    c = torch.arange(m, device=sy.device)
    eye = torch.eye(m, dtype=sy.dtype, device=sy.device)
    sty = sy.gather(1, rows).gather(2, cols)  # chronological S'Y
    r = torch.where(both & (c[:, None] <= c[None, :]), sty, eye)  # R: upper triangle (a mask: CPU triu is slow)
    d = torch.where(valid, sty.diagonal(dim1=1, dim2=2), 0)
    yty = torch.where(both, yy.gather(1, rows).gather(2, cols), 0)
    a = torch.where(valid, s_g.gather(1, order), 0)[:, :, None]  # S'g
    b = torch.where(valid, y_g.gather(1, order), 0)[:, :, None]  # Y'g
    gam = gamma[:, None, None]
    u = torch.linalg.solve_triangular(r, a, upper=True)
    p = torch.linalg.solve_triangular(r.mT, d[:, :, None] * u + gam * (yty @ u) - gam * b, upper=False)
    q = -gam * u
    # back from chronological positions to slots
    return p.squeeze(2).gather(1, position), q.squeeze(2).gather(1, position)


class LBFGS(torch.optim.Optimizer):
    """L-BFGS over one parameter of shape (K, ...): K independent problems, one closure call per step.

    history_size: pairs kept per image (m). first_step: largest pixel change of a step taken without curvature
    information. max_step: largest pixel change of any step. curvature_eps: a pair needs s'y > eps |s| |y|.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        history_size: int = 100,
        first_step: float = FIRST_STEP,
        max_step: float = MAX_STEP,
        curvature_eps: float = CURVATURE_EPS,
        history_dtype: str = "float32",
    ) -> None:
        if history_dtype not in HISTORY_DTYPES:
            raise ValueError(f"history_dtype={history_dtype!r}: use one of {', '.join(HISTORY_DTYPES)}")
        if history_size < 1:
            raise ValueError(f"history_size must be at least 1, got {history_size}")
        if not (first_step > 0 and max_step > 0 and curvature_eps >= 0):
            raise ValueError(
                f"need first_step > 0, max_step > 0, curvature_eps >= 0; got {first_step}, {max_step}, {curvature_eps}"
            )
        defaults = {"history_size": history_size, "first_step": first_step, "max_step": max_step}
        defaults["history_dtype"] = history_dtype
        super().__init__(params, {**defaults, "curvature_eps": curvature_eps})
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("LBFGS takes exactly one parameter tensor, batched over its first dimension")

    def _allocate(self, p: Tensor, state: dict[str, Tensor]) -> None:
        """The per-image state, zeros, allocated once at the first step; later steps update it in place."""
        k, n, m = p.shape[0], p[0].numel(), self.param_groups[0]["history_size"]
        zeros = dict(dtype=p.dtype, device=p.device)
        stored = HISTORY_DTYPES[self.param_groups[0]["history_dtype"]] or p.dtype
        # rows 0..m-1: s by slot, rows m..2m-1: y by slot
        state["history"] = torch.zeros(k, 2 * m, n, dtype=stored, device=p.device)
        state["sy"] = torch.zeros(k, m, m, **zeros)  # s_i'y_j by slot
        state["yy"] = torch.zeros(k, m, m, **zeros)  # y_i'y_j by slot
        state["x_prev"] = torch.zeros(k, n, **zeros)  # the last point with a finite loss and gradient ...
        state["g_prev"] = torch.zeros(k, n, **zeros)  # ... and its gradient
        state["f_prev"] = torch.zeros(k, **zeros)  # ... and its loss
        state["has_prev"] = torch.zeros(k, dtype=torch.bool, device=p.device)
        state["sd_growth"] = torch.ones(k, **zeros)  # steepest-descent step = first_step * sd_growth
        state["n_pairs"] = torch.zeros(k, dtype=torch.long, device=p.device)  # accepted pairs, ever

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch.optim casts every tensor of a floating-point parameter's state to the parameter's dtype; the counter
        # and the flag are taken back from the saved values as they were (long, bool).
        # The history too, in the dtype it was kept in (a bfloat16 history cast to float32 would double its memory).
        index = state_dict["param_groups"][0]["params"][0]
        saved = dict(state_dict["state"].get(index, {}))
        kept = {key: saved.pop(key) for key in ("n_pairs", "has_prev", "history") if key in saved}
        super().load_state_dict({**state_dict, "state": {**state_dict["state"], index: saved}})
        p = self.param_groups[0]["params"][0]
        for key, value in kept.items():
            self.state[p][key] = value.to(device=p.device, copy=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor], active: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Evaluate the K losses and gradients once (closure), then move each image. Returns the closure's losses.

        An image whose loss or gradient is not finite is not moved and its history is left as it was; an image
        with active[k] False is not moved either (its curvature pair, if sound, is still recorded).
        """
        group = self.param_groups[0]
        p = group["params"][0]
        m, eps = group["history_size"], group["curvature_eps"]
        with torch.enable_grad():
            loss = closure()
        if p.grad is None:
            raise RuntimeError("the closure must call backward() so that the image has a gradient")
        state = self.state[p]
        if not state:
            self._allocate(p, state)
        k = p.shape[0]
        image = memory_order(p.detach(), p)
        x = image.reshape(k, -1)  # a view unless the layout is unusual; either way p is updated through `image`
        g = memory_order(p.grad.detach(), p).reshape(k, -1)
        g_max = g.abs().amax(1)  # propagates NaN and inf: also the finiteness test of the gradient
        f = loss.detach().reshape(k)
        ok = torch.isfinite(f) & torch.isfinite(g_max)
        hist, sy_m, yy_m, n_pairs = state["history"], state["sy"], state["yy"], state["n_pairs"]

        # 1. The curvature pair since the last good point; kept only if the curvature along s is clearly positive.
        s, y = x - state["x_prev"], g - state["g_prev"]
        sy = torch.linalg.vecdot(s, y)
        s_norm, y_norm = torch.linalg.vector_norm(s, dim=1), torch.linalg.vector_norm(y, dim=1)
        accept = ok & state["has_prev"] & (sy > eps * s_norm * y_norm)

        # 2. Write it into the ring buffer (slot n_pairs % m) of the images that accept it.
        slot = n_pairs % m
        rows = torch.arange(k, device=p.device)
        for index, new in ((slot, s), (slot + m, y)):
            hist.index_put_((rows, index), torch.where(accept[:, None], new.to(hist.dtype), hist[rows, index]))
        n_pairs.add_(accept.long())

        # 3. One pass over the buffer gives the new row and column of S'Y and Y'Y, and S g, Y g for the direction.
        # (Vectors times the buffer's transpose: the layout BLAS reads at memory speed, 3x faster than hist @ V'.)
        dots = _times_history(torch.stack([y, s, g], 1), hist)  # (K, 3, 2m)
        s_y, y_y, y_s = dots[:, 0, :m], dots[:, 0, m:], dots[:, 1, m:]
        s_g, y_g = dots[:, 2, :m], dots[:, 2, m:]
        new = (torch.arange(m, device=p.device) == slot[:, None]) & accept[:, None]  # (K, m): the slot written
        sy_m.copy_(torch.where(new[:, :, None], y_s[:, None, :], sy_m))  # row:    s_new'y_j
        sy_m.copy_(torch.where(new[:, None, :], s_y[:, :, None], sy_m))  # column: s_i'y_new
        yy_m.copy_(torch.where(new[:, :, None], y_y[:, None, :], yy_m))
        yy_m.copy_(torch.where(new[:, None, :], y_y[:, :, None], yy_m))

        # 4. The quasi-Newton direction d = -H g, initial scaling gamma from the newest accepted pair.
        newest = ((n_pairs - 1) % m)[:, None]
        gamma = sy_m.diagonal(dim1=1, dim2=2).gather(1, newest) / yy_m.diagonal(dim1=1, dim2=2).gather(1, newest)
        gamma = torch.where(n_pairs > 0, gamma.squeeze(1), 1.0)
        coef_s, coef_y = compact_coefficients(sy_m, yy_m, s_g, y_g, gamma, n_pairs)
        coef = torch.cat([coef_s, coef_y], 1)
        hg = gamma[:, None] * g + _combine_history(coef, hist, g.dtype)
        # g'Hg > 0 in exact arithmetic (accepted pairs keep H positive definite); if rounding broke that, or the
        # product overflowed, do as if there were no history.
        g_hg = gamma * torch.linalg.vecdot(g, g) + (coef * torch.cat([s_g, y_g], 1)).sum(1)
        d_max = hg.abs().amax(1)
        quasi_newton = (n_pairs > 0) & (g_hg > 0) & torch.isfinite(d_max)

        # 5. Without usable history: steepest descent, the largest pixel change being first_step * growth (0 if
        # g = 0). The growth doubles whenever such a step lowered the loss yet gave no usable curvature: the loss is
        # concave or flat along the path (a white-noise start, its Gram far below the style's), where a fixed small
        # step would crawl. This is a line search's expansion phase, spread over steps (one evaluation each). Once a
        # pair is accepted it is reset: a later fallback (a direction broken by rounding) starts small again.
        growth = state["sd_growth"]
        grow = ok & state["has_prev"] & ~accept & (n_pairs == 0) & (f < state["f_prev"])
        most = max(1.0, group["max_step"] / group["first_step"])  # beyond it the cap binds anyway; no overflow
        growth.copy_(torch.where(accept, 1.0, torch.where(grow, (2 * growth).clamp(max=most), growth)))
        sd_scale = torch.where(g_max > 0, group["first_step"] * growth / g_max, 0.0)
        d = torch.where(quasi_newton[:, None], -hg, -sd_scale[:, None] * g)
        d_max = torch.where(quasi_newton, d_max, sd_scale * g_max)

        # 6. No pixel moves more than max_step (the whole step shrinks, its direction is kept).
        d = d * torch.clamp(group["max_step"] / d_max, max=1.0)[:, None]

        # 7. Remember this point if it is good, then move the images that may move.
        move = ok if active is None else ok & active
        state["x_prev"].copy_(torch.where(ok[:, None], x, state["x_prev"]))
        state["g_prev"].copy_(torch.where(ok[:, None], g, state["g_prev"]))
        state["f_prev"].copy_(torch.where(ok, f, state["f_prev"]))
        state["has_prev"].logical_or_(ok)
        image.add_(torch.where(move[:, None], d, 0.0).view(image.shape))
        return loss
