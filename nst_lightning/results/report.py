"""Figures for a sweep: a grid of the result images, the final losses, and a CSV summary.

    python -m nst_lightning -m ratio=1e-1,1e-3 content_layer=conv2_2,conv4_2 hydra.sweep.dir=D
    python -m nst_lightning.report D [--out D/grid.png] [--rows ratio] [--cols content_layer] [--tile 256]

writes ``D/grid.png``, ``D/losses.png`` and ``D/summary.csv`` and prints their paths. A run is any folder
under D holding ``metrics.json`` and ``.hydra/config.yaml``; the swept keys are the config keys whose values
differ between runs, in the order of the command line's overrides. The first is the rows, the second the
columns; any further keys are folded into the row labels.

A job that failed (its folder holds a file ``failed`` with the error, and no result.png) is shown as a "failed"
tile, and its line in summary.csv carries the error's first line in a ``failed`` column.

When runs have been measured (``python -m nst_lightning.metrics D``: the panel under "metrics" in metrics.json),
summary.csv has the panel's columns (``metrics.<name>``) and the report adds the cross table of runs x metrics,
e.g. for a sweep over ``style_loss``: ``D/cross_table.csv`` (one line per run, then a line ``best`` naming the
best run of each column), ``D/cross_table.md`` and ``D/cross_table.png`` (the best value of each column marked).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

from nst_lightning.config.derive import format_value
from nst_lightning.inputs.images import load_image, open_image, tensor_to_pil
from nst_lightning.results.runs import Run, find_runs, is_number, same_value, swept_keys, warn
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import WriteError, atomic_write, shown

LOSSES = ("loss_total", "loss_content", "loss_style")
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
MIN_TILE = 16
ROW_LABEL_WRAP = 1.25  # row labels wrap after commas at this many tile widths


# ---------------------------------------------------------------------------------------------- runs


def ordered_values(runs: list[Run], key: str) -> list[Any]:
    """A key's values: ascending when all are numbers (1e-5 < 1e-4), else in the order first seen."""
    seen: list[Any] = []
    for run in runs:
        value = run.config.get(key)
        if not any(same_value(value, s) for s in seen):
            seen.append(value)
    return sorted(seen) if all(is_number(v) for v in seen) else seen


# -------------------------------------------------------------------------------------------- layout


@dataclass
class Layout:
    """Which run goes in which cell. A row (column) is a tuple of values of ``row_keys`` (``col_keys``)."""

    row_keys: list[str]
    col_keys: list[str]
    x_keys: int  # row_keys[:x_keys] are the row key and the keys that follow it; the rest are folded in
    rows: list[tuple[Any, ...]]
    cols: list[tuple[Any, ...]]
    cells: dict[tuple[int, int], Run] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)  # every run, in grid order

    def row_label(self, i: int) -> str:
        if self.row_keys == [""]:  # a strip (strip_layout): its one row needs no label
            return ""
        return _label(self.row_keys, self.rows[i]) or "result"

    def col_label(self, j: int) -> str:
        return _label(self.col_keys, self.cols[j])


def _label(keys: list[str], values: tuple[Any, ...]) -> str:
    """ "ratio=0.001, content_layer=conv4_2"; a key named "" shows its value alone (a free-text label)."""
    return ", ".join(f"{k}={format_value(v)}" if k else str(v) for k, v in zip(keys, values, strict=True))


def strip_layout(runs: list[Run], labels: list[str]) -> Layout:
    """One row holding the runs in their order (a batch's list order), under free-text column labels: for
    studies whose images are not a grid of two keys (content conv2_2 | content conv4_2 | style conv2_1 alone)."""
    if len(labels) != len(runs):
        raise NSTError(f"--labels gives {len(labels)} labels for {len(runs)} runs: give one label per run")
    layout = Layout(row_keys=[""], col_keys=[""], x_keys=0, rows=[("",)], cols=[(label,) for label in labels])
    layout.cells = {(0, j): run for j, run in enumerate(runs)}
    layout.runs = list(runs)
    return layout


def _follows(runs: list[Run], key: str, leader: str) -> bool:
    """Whether ``key``'s value is fixed by ``leader``'s (optimizer=adam also sets optimizer.lr)."""
    seen: list[tuple[Any, Any]] = []
    for run in runs:
        a, b = run.config.get(leader), run.config.get(key)
        if any(same_value(a, x) and not same_value(b, y) for x, y in seen):
            return False
        seen.append((a, b))
    return True


def plan_layout(runs: list[Run], rows: str | None = None, cols: str | None = None) -> Layout:
    """Rows, columns and cells for ``runs``; ``rows``/``cols`` pick the keys (else the first two swept)."""
    swept = swept_keys(runs)
    for option, key in (("--rows", rows), ("--cols", cols)):
        if key is not None and key not in swept:
            raise NSTError(f"{option} {key}: not a swept key; the runs differ in: {', '.join(swept) or 'nothing'}")
    if rows is not None and rows == cols:
        raise NSTError(f"--rows and --cols both name {rows}: give two different swept keys")
    chosen = [k for k in (rows, cols) if k is not None]
    # Keys that merely follow another key ride along in its label instead of making a diagonal grid.
    groups: dict[str, list[str]] = {}
    for key in chosen + [k for k in swept if k not in chosen]:
        leader = None if key in chosen else next((g for g in groups if _follows(runs, key, g)), None)
        groups.setdefault(leader or key, []).append(key)
    leaders = list(groups)
    row_key = rows or next((k for k in leaders if k != cols), None)
    col_key = cols or next((k for k in leaders if k != row_key), None)
    row_keys = groups[row_key] if row_key else []
    x_keys = len(row_keys)
    row_keys = row_keys + [k for g in leaders if g not in (row_key, col_key) for k in groups[g]]
    col_keys = groups[col_key] if col_key else []

    rank = {k: ordered_values(runs, k) for k in row_keys + col_keys}

    def sort_key(keys: list[str], values: tuple[Any, ...]) -> list[int]:
        return [next(i for i, v in enumerate(rank[k]) if same_value(v, x)) for k, x in zip(keys, values, strict=True)]

    def values(run: Run, keys: list[str]) -> tuple[Any, ...]:
        return tuple(run.config.get(k) for k in keys)

    def unique(tuples: Iterable[tuple[Any, ...]], keys: list[str]) -> list[tuple[Any, ...]]:
        by_rank = {tuple(sort_key(keys, t)): t for t in tuples}
        return [by_rank[r] for r in sorted(by_rank)]

    layout = Layout(row_keys, col_keys, x_keys, [], [])
    layout.rows = unique((values(r, row_keys) for r in runs), row_keys)
    layout.cols = unique((values(r, col_keys) for r in runs), col_keys)
    row_index = {tuple(sort_key(row_keys, t)): i for i, t in enumerate(layout.rows)}
    col_index = {tuple(sort_key(col_keys, t)): j for j, t in enumerate(layout.cols)}
    placed = []
    for run in runs:
        i = row_index[tuple(sort_key(row_keys, values(run, row_keys)))]
        cell = (i, col_index[tuple(sort_key(col_keys, values(run, col_keys)))])
        if cell in layout.cells:  # runs that differ only in ignored keys (trainer.*)
            warn(f"{run.path} has the same swept values as {layout.cells[cell].path}: showing the latter")
        else:
            layout.cells[cell] = run
        placed.append((cell, run))
    layout.runs = [run for _, run in sorted(placed, key=lambda p: p[0])]
    return layout


# ---------------------------------------------------------------------------------------------- grid


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def font_size_for(tile: int) -> int:
    return max(10, tile // 8)


def pad_for(tile: int) -> int:
    return max(2, tile // 32)


@dataclass(frozen=True)
class GridGeometry:
    """Where everything in grid.png lies, in pixels.

    Left to right: the row-label column (label_w), then for each of max(n_cols, 2) columns a pad and a tile,
    then a final pad. Top to bottom: pad, the captions strip (label_h) over the content and style tiles,
    pad, the column-label strip (label_h), then n_rows times a tile and a pad, then the footer (label_h: the steps
    and size the runs ran). So

        width  = label_w + pad + max(n_cols, 2) * (tile + pad)
        height = 2 * pad + 3 * label_h + tile + n_rows * (tile + pad)

    with pad = max(2, tile // 32), label_h = text height + 2 * pad, and label_w = the row labels'
    widest line (labels wrap after commas at ROW_LABEL_WRAP * tile; at least tile // 2, at most 3 * tile: longer
    lines are drawn smaller) + 2 * pad.
    """

    n_rows: int
    n_cols: int
    tile: int
    pad: int
    font_size: int
    label_w: int
    label_h: int

    @property
    def width(self) -> int:
        return self.label_w + self.pad + max(self.n_cols, 2) * (self.tile + self.pad)

    @property
    def height(self) -> int:
        return 2 * self.pad + 3 * self.label_h + self.tile + self.n_rows * (self.tile + self.pad)

    def column_x(self, j: int) -> int:
        return self.label_w + self.pad + j * (self.tile + self.pad)

    def row_y(self, i: int) -> int:
        return 2 * self.pad + 2 * self.label_h + self.tile + i * (self.tile + self.pad)

    def cell_box(self, i: int, j: int) -> tuple[int, int, int, int]:
        x, y = self.column_x(j), self.row_y(i)
        return x, y, x + self.tile, y + self.tile

    def source_box(self, j: int) -> tuple[int, int, int, int]:
        """The content (j=0) or style (j=1) tile."""
        x, y = self.column_x(j), self.pad + self.label_h
        return x, y, x + self.tile, y + self.tile

    def caption_box(self, j: int) -> tuple[int, int, int, int]:
        x = self.column_x(j)
        return x, self.pad, x + self.tile, self.pad + self.label_h

    def col_label_box(self, j: int) -> tuple[int, int, int, int]:
        x, y = self.column_x(j), 2 * self.pad + self.label_h + self.tile
        return x, y, x + self.tile, y + self.label_h

    @property
    def footer_box(self) -> tuple[int, int, int, int]:
        y = self.row_y(self.n_rows)
        return self.pad, y, self.width - self.pad, y + self.label_h

    def row_label_box(self, i: int) -> tuple[int, int, int, int]:
        y = self.row_y(i)
        return self.pad, y, self.label_w - self.pad, y + self.tile


def wrap_label(text: str, width: float, length: Callable[[str], float] = len) -> list[str]:
    """A long label broken after its commas into lines of at most ``width`` (measured by ``length``: characters,
    or a font's getlength), e.g. style_layers=[conv1_1,...,conv5_1] on a few lines instead of one very wide
    one. A part without commas stays whole, however long."""
    lines, line = [], ""
    for part in re.split(r"(?<=,)", text):
        if line and length(line + part) > width:
            lines.append(line)
            line = part
        else:
            line += part
    return [*lines, line]


def grid_geometry(n_rows: int, n_cols: int, tile: int, row_labels: Iterable[str] = ()) -> GridGeometry:
    pad, size = pad_for(tile), font_size_for(tile)
    font = _font(size)
    text_h = font.getbbox("Agy[]")[3]
    lines = [line for label in row_labels for line in wrap_label(label, ROW_LABEL_WRAP * tile, font.getlength)]
    text_w = max((font.getlength(line) for line in lines), default=0)
    label_w = min(max(math.ceil(text_w), tile // 2), 3 * tile) + 2 * pad if text_w else pad  # no labels: no column
    return GridGeometry(n_rows, n_cols, tile, pad, size, label_w, text_h + 2 * pad)


def _draw_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, size: int, left: bool) -> None:
    """Text centred (or left-aligned) in ``box``, shrunk until it fits the box's width."""
    x0, y0, x1, y1 = box
    while size > 6 and _font(size).getlength(text) > x1 - x0:
        size -= 1
    font = _font(size)
    if left:
        draw.text((x0, (y0 + y1) / 2), text, fill=BLACK, font=font, anchor="lm")
    else:
        draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=BLACK, font=font, anchor="mm")


def _draw_row_label(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, size: int) -> None:
    """A row label, wrapped after commas, left-aligned and centred vertically in ``box``, shrunk to fit."""
    x0, y0, x1, y1 = box
    if not text:
        return
    lines = wrap_label(text, ROW_LABEL_WRAP * (y1 - y0), _font(size).getlength)
    while size > 6 and max(_font(size).getlength(line) for line in lines) > x1 - x0:
        size -= 1
    font = _font(size)
    step = font.getbbox("Agy[]")[3] * 1.2
    top = (y0 + y1) / 2 - step * (len(lines) - 1) / 2
    for k, line in enumerate(lines):
        draw.text((x0, top + k * step), line, fill=BLACK, font=font, anchor="lm")


def _placeholder(tile: int, text: str, size: int) -> Image.Image:
    img = Image.new("RGB", (tile, tile), GREY)
    _draw_text(ImageDraw.Draw(img), (2, 0, tile - 2, tile), text, size, left=False)
    return img


def _fit(img: Image.Image, tile: int) -> Image.Image:
    scale = tile / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS)


def _paste(canvas: Image.Image, img: Image.Image, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    canvas.paste(img, (x0 + (x1 - x0 - img.width) // 2, y0 + (y1 - y0 - img.height) // 2))


def _source_image(spec: Any, what: str, tile: int, size: int) -> Image.Image:
    try:
        return tensor_to_pil(load_image(str(spec), tile, what))
    except Exception as exc:  # a moved photo or an offline built-in painting: say so in the figure
        warn(f"cannot show the {what}: {exc}")
        return _placeholder(tile, "not found", size)


def _cell_image(run: Run | None, tile: int, font_size: int) -> Image.Image:
    """A run's result fitted into a tile x tile square (white around it), or a grey tile saying why there is none."""
    if run is None:
        return _placeholder(tile, "missing", font_size)
    if run.failed:
        return _placeholder(tile, "failed", font_size)
    try:
        img = _fit(open_image(str(run.path / "result.png"), "result"), tile)
    except NSTError as exc:
        warn(str(exc))
        return _placeholder(tile, "no image", font_size)
    square = Image.new("RGB", (tile, tile), WHITE)
    _paste(square, img, (0, 0, tile, tile))
    return square


def build_grid(layout: Layout, tile: int = 256, sources: bool = True) -> Image.Image:
    """The figure: content and style on top, then one tile per (row, column), labelled.

    ``sources=False`` leaves out the content/style band (height pad + label_h + tile), e.g. for figures
    published without copies of third-party input images.
    """
    labels = [layout.row_label(i) for i in range(len(layout.rows))]
    g = grid_geometry(len(layout.rows), len(layout.cols), tile, labels)
    canvas = Image.new("RGB", (g.width, g.height), WHITE)
    draw = ImageDraw.Draw(canvas)
    first = layout.runs[0].config
    for j, key in enumerate(("content", "style") if sources else ()):
        varies = any(not same_value(r.config.get(key), first.get(key)) for r in layout.runs)
        _draw_text(draw, g.caption_box(j), f"{key} (first run)" if varies else key, g.font_size, left=False)
        _paste(canvas, _source_image(first.get(key), f"{key} image", tile, g.font_size), g.source_box(j))
    for j in range(len(layout.cols)):
        _draw_text(draw, g.col_label_box(j), layout.col_label(j), g.font_size, left=False)
    for i, label in enumerate(labels):
        _draw_row_label(draw, g.row_label_box(i), label, g.font_size)
    cells = [_cell_image(layout.cells.get((i, j)), tile, g.font_size) for i in range(g.n_rows) for j in range(g.n_cols)]
    block = make_grid(torch.stack([pil_to_tensor(c) for c in cells]), nrow=g.n_cols, padding=g.pad, pad_value=255)
    corner = (g.label_w, g.row_y(0) - g.pad) if len(cells) > 1 else g.cell_box(0, 0)[:2]  # one tile: no padding
    canvas.paste(to_pil_image(block), corner)
    x0, y0, _, y1 = g.footer_box
    right = g.width if sources else g.column_x(max(g.n_cols, 1))  # without sources one column is cut narrower
    _draw_text(draw, (x0, y0, right - g.pad, y1), run_caption(layout.runs), g.font_size, left=True)
    if not sources:
        # without the two source tiles, a single column needs no room for a second one
        return canvas.crop((0, g.pad + g.label_h + g.tile, g.column_x(max(g.n_cols, 1)), g.height))
    return canvas


def run_caption(runs: list[Run]) -> str:
    """What a figure's runs ran, for its footer: "600 steps, 256x192 px" (a range when they differ)."""
    steps = sorted({int(r.metrics["steps"]) for r in runs if r.metrics.get("steps") is not None})
    sizes = sorted({tuple(r.metrics["size"]) for r in runs if r.metrics.get("size")}, key=lambda hw: hw[0] * hw[1])
    parts = []
    if steps:
        parts.append(f"{steps[0]} steps" if len(steps) == 1 else f"{steps[0]}-{steps[-1]} steps")
    if sizes:
        (h0, w0), (h1, w1) = sizes[0], sizes[-1]
        parts.append(f"{w1}x{h1} px" if len(sizes) == 1 else f"{w0}x{h0} to {w1}x{h1} px")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------- plot and table


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plot_losses(layout: Layout, path: str | Path) -> Path:
    """Final losses against the row key, one line per column value (and folded keys); log y."""
    # The Agg canvas directly, not pyplot: no display needed and no global backend switched under a notebook.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x_key = layout.row_keys[0] if layout.row_keys else None
    x_values = list(dict.fromkeys(row[0] for row in layout.rows)) if x_key else [None]  # rows are sorted by x
    numeric = x_key is not None and all(is_number(v) for v in x_values)
    positions = [float(v) for v in x_values] if numeric else list(range(len(x_values)))

    # One series per column value and folded-key values; points (x position, run) sorted along x.
    series: dict[str, list[tuple[float, Run]]] = {}
    for (i, j), run in sorted(layout.cells.items(), key=lambda cell: (cell[0][1], cell[0][0])):
        folded = _label(layout.row_keys[layout.x_keys :], layout.rows[i][layout.x_keys :])
        name = ", ".join(t for t in (layout.col_label(j), folded) if t)
        series.setdefault(name, []).append((positions[x_values.index(layout.rows[i][0])] if x_key else 0, run))
    per_layer = len(series) == 1
    panels = [*LOSSES, "loss_style_layers"] if per_layer else list(LOSSES)

    fig = Figure(figsize=(4.6 * len(panels), 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for ax, metric in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        lines: dict[str, list[tuple[float, float]]] = {}
        if metric == "loss_style_layers":
            points = next(iter(series.values()))
            layers = dict.fromkeys(k for _, run in points for k in (run.metrics.get(metric) or {}))
            for layer in layers:
                lines[layer] = [(x, _number((run.metrics.get(metric) or {}).get(layer))) for x, run in points]
            ax.set_title("style loss per layer (E_l)")
        else:
            lines = {name: [(x, _number(run.metrics.get(metric))) for x, run in pts] for name, pts in series.items()}
            ax.set_title(metric)
        for name, points in lines.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=name or None)
        ys = [y for pts in lines.values() for _, y in pts if math.isfinite(y)]
        if ys and min(ys) > 0:
            ax.set_yscale("log")
        if numeric and min(positions) > 0 and max(positions) / min(positions) > 10:
            ax.set_xscale("log")
        if not numeric:  # categories, in the grid's row order
            ticks = ["\n".join(wrap_label(format_value(v), 12)) if x_key else "" for v in x_values]
            ax.set_xticks(positions, ticks, fontsize="small")
        ax.set_xlabel(x_key or "")
        ax.grid(True, which="major", alpha=0.3)
        if any(lines):  # some line has a name
            ax.legend(fontsize="small")
    return atomic_write(Path(path), lambda f: fig.savefig(f, format="png"))


def write_summary(layout: Layout, path: str | Path) -> Path:
    """One line per run: its folder, the swept keys and every final metric (per-layer losses flattened)."""
    keys = layout.row_keys[: layout.x_keys] + layout.col_keys + layout.row_keys[layout.x_keys :]
    rows = []
    for run in layout.runs:
        row: dict[str, Any] = {"run": run.name, **{k: run.config.get(k) for k in keys}}
        if run.failed:
            row["failed"] = run.failed.splitlines()[0]
        for name, value in run.metrics.items():
            if isinstance(value, dict):
                row.update({f"{name}.{k}": v for k, v in value.items()})
            else:
                row[name] = format_value(value) if isinstance(value, list) else value
        rows.append(row)
    first = ["run", *keys, *LOSSES]
    columns = list(dict.fromkeys(first + [c for row in rows for c in row]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(Path(path), lambda f: f.write(text.getvalue().encode()))


# ------------------------------------------------------------------------------------------- cross table

PANEL_KEY = "metrics"  # where python -m nst_lightning.metrics puts its panel in metrics.json
DEFAULT_STYLE_LOSS = "gram"


def optimised_loss(run: Run) -> str:
    """The style loss a run optimised: its ``style_loss`` override (or ``style_loss.name``), else its config's,
    else the default (gram, the paper's)."""
    for item in reversed(run.overrides):
        key, _, value = item.lstrip("+~").partition("=")
        if key in ("style_loss", "style_loss.name") and value:
            return value
    for key in ("style_loss", "style_loss.name"):
        value = run.config.get(key)
        if isinstance(value, str) and value:
            return value
    return DEFAULT_STYLE_LOSS


def metric_columns(runs: Iterable[Run]) -> list[str]:
    """The panel's names present in any run, in the panel's order (then any others, in the order first seen)."""
    from nst_lightning.results.metrics import PANEL

    seen = dict.fromkeys(k for run in runs for k in (run.metrics.get(PANEL_KEY) or {}))
    return [k for k in PANEL if k in seen] + [k for k in seen if k not in PANEL]


def best_runs(layout: Layout, columns: list[str]) -> dict[str, list[int]]:
    """For each metric, the indices (in layout.runs) of the runs with its best finite value (the lowest; the
    highest for a higher-is-better metric such as SSIM); ties all count."""
    from nst_lightning.results.metrics import HIGHER_IS_BETTER

    best: dict[str, list[int]] = {}
    for column in columns:
        values = [_number((run.metrics.get(PANEL_KEY) or {}).get(column)) for run in layout.runs]
        finite = [v for v, run in zip(values, layout.runs, strict=True) if math.isfinite(v) and not run.failed]
        if finite:
            target = max(finite) if column in HIGHER_IS_BETTER else min(finite)
            best[column] = [i for i, v in enumerate(values) if v == target and not layout.runs[i].failed]
    return best


def _run_label(layout: Layout, run: Run) -> str:
    keys = layout.row_keys[: layout.x_keys] + layout.col_keys + layout.row_keys[layout.x_keys :]
    return _label(keys, tuple(run.config.get(k) for k in keys)) or run.name


def _cell(run: Run, column: str) -> str:
    if run.failed:
        return "failed"
    value = _number((run.metrics.get(PANEL_KEY) or {}).get(column))
    return f"{value:.4g}" if math.isfinite(value) else ""


def write_cross_table(layout: Layout, path: str | Path) -> list[Path]:
    """Runs x metrics: ``path`` (CSV: run, label, style_loss, one column per metric, then a line "best" naming the
    best run of each column), the same table as markdown (``.md``, best values in bold) and as a picture (``.png``,
    best cells green, failed runs grey). Values as measured, 4 significant digits in the markdown and picture."""
    path = Path(path)
    columns = metric_columns(layout.runs)
    best = best_runs(layout, columns)
    labels = [_run_label(layout, run) for run in layout.runs]
    losses = [optimised_loss(run) for run in layout.runs]

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["run", "label", "style_loss", *columns])
    for run, label, loss in zip(layout.runs, labels, losses, strict=True):
        panel = run.metrics.get(PANEL_KEY) or {}
        values = ["failed" if run.failed else ("" if panel.get(c) is None else panel.get(c)) for c in columns]
        writer.writerow([run.name, label, loss, *values])
    writer.writerow(["best", "", "", *(" ".join(layout.runs[i].name for i in best.get(c, [])) for c in columns)])
    csv_path = atomic_write(path, lambda f: f.write(text.getvalue().encode()))

    from nst_lightning.results.metrics import HIGHER_IS_BETTER, SHORT_NAMES

    heads = [f"{SHORT_NAMES.get(c, c)} {'(max)' if c in HIGHER_IS_BETTER else '(min)'}" for c in columns]
    cells = [[_cell(run, c) for c in columns] for run in layout.runs]
    lines = ["| run | style_loss | " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(columns)]
    for i, (label, loss, row) in enumerate(zip(labels, losses, cells, strict=True)):
        shown = [f"**{v}**" if i in best.get(c, []) else v for c, v in zip(columns, row, strict=True)]
        lines.append(f"| {label} | {loss} | " + " | ".join(shown) + " |")
    markdown = "\n".join(lines) + "\n\nBest per column in bold (min: lower is better, max: higher).\n"
    md_path = atomic_write(path.with_suffix(".md"), lambda f: f.write(markdown.encode()))
    return [csv_path, md_path, _render_table(path.with_suffix(".png"), labels, losses, heads, cells, columns, best)]


def _render_table(
    path: Path,
    labels: list[str],
    losses: list[str],
    heads: list[str],
    cells: list[list[str]],
    columns: list[str],
    best: dict[str, list[int]],
) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [[label, loss, *row] for label, loss, row in zip(labels, losses, cells, strict=True)]
    header = ["run", "style_loss", *(h.replace(" ", "\n", 1) for h in heads)]  # name over (min)/(max)
    longest = [max(len(line) for line in h.splitlines()) for h in header]
    widths = [max(longest[j], *(len(r[j]) for r in rows)) + 2 for j in range(len(header))]
    fig = Figure(figsize=(max(4.0, 0.11 * sum(widths) + 0.3 * len(header)), 0.6 + 0.3 * (len(rows) + 2)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    total = sum(widths)
    for (i, j), cell in table.get_celld().items():
        cell.set_width(widths[j] / total)
        cell.set_height(1 / (len(rows) + 2.5) * (1.6 if i == 0 else 1))
        if i == 0:
            cell.set_facecolor("#dddddd")
        elif j >= 2 and rows[i - 1][j] == "failed":
            cell.set_facecolor("#bbbbbb")
        elif j >= 2 and (i - 1) in best.get(columns[j - 2], []):
            cell.set_facecolor("#b7e4b0")
            cell.get_text().set_fontweight("bold")
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


# ----------------------------------------------------------------------------------------------- CLI


def build_report(
    directory: str | Path,
    out: str | Path | None = None,
    rows: str | None = None,
    cols: str | None = None,
    tile: int = 256,
    losses: str | Path | None = None,
    summary: str | Path | None = None,
    sources: bool = True,
    cross_table: str | Path | None = None,
    labels: list[str] | None = None,
) -> list[Path]:
    """grid.png, losses.png and summary.csv for the sweep in ``directory`` (and cross_table.csv/.md/.png when its
    runs have been measured); returns their paths."""
    if tile < MIN_TILE:
        raise NSTError(f"--tile {tile} is too small: use at least {MIN_TILE} px")
    directory = Path(directory)
    runs = find_runs(directory)
    layout = strip_layout(runs, labels) if labels else plan_layout(runs, rows, cols)
    grid = build_grid(layout, tile, sources)
    grid_path = atomic_write(Path(out or directory / "grid.png"), lambda f: grid.save(f, format="PNG"))
    paths = [
        grid_path,
        plot_losses(layout, losses or directory / "losses.png"),
        write_summary(layout, summary or directory / "summary.csv"),
    ]
    if any(run.metrics.get(PANEL_KEY) for run in layout.runs):
        paths += write_cross_table(layout, cross_table or directory / "cross_table.csv")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nst_lightning.report",
        description="Grid of result images, loss plot and summary.csv for a sweep (python -m nst_lightning -m ...).",
    )
    parser.add_argument("directory", help="the sweep's folder (hydra.sweep.dir), searched recursively for runs")
    parser.add_argument("--out", help="the grid image (default: DIRECTORY/grid.png)")
    parser.add_argument("--rows", metavar="KEY", help="swept key for the rows (default: the first swept key)")
    parser.add_argument("--cols", metavar="KEY", help="swept key for the columns (default: the second)")
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="LABEL",
        help="one row of the runs in their order, under these column labels (one per run) instead of a grid",
    )
    parser.add_argument("--tile", metavar="PX", type=int, default=256, help="tile size in pixels (default: 256)")
    parser.add_argument("--losses", metavar="PATH", help="the loss plot (default: DIRECTORY/losses.png)")
    parser.add_argument("--summary", metavar="PATH", help="the table (default: DIRECTORY/summary.csv)")
    parser.add_argument("--no-sources", action="store_true", help="leave the content and style images out of the grid")
    parser.add_argument(
        "--cross-table",
        metavar="PATH",
        help="runs x metrics table, written when the runs have been measured (python -m nst_lightning.metrics); "
        "the .md and .png beside it (default: DIRECTORY/cross_table.csv)",
    )
    args = parser.parse_args(argv)
    try:
        paths = build_report(
            args.directory,
            args.out,
            args.rows,
            args.cols,
            args.tile,
            args.losses,
            args.summary,
            not args.no_sources,
            args.cross_table,
            args.labels,
        )
    except WriteError as exc:  # a read-only sweep folder: the report can go elsewhere
        print(
            f"error: cannot write {shown(exc.path or '')}: {exc.reason}; give --out, --losses and --summary "
            "(and --cross-table for measured runs) paths you can write to, e.g. --out ~/grid.png",
            file=sys.stderr,
        )
        return 2
    except NSTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
