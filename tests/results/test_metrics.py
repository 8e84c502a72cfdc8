"""The objective-independent metrics with the real network on 32 px built-in images, and their CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_process
from omegaconf import OmegaConf

from nst_lightning.inputs.images import load_image, save_png
from nst_lightning.results import metrics
from nst_lightning.results.metrics import PANEL, grain, main, measure
from nst_lightning.results.runs import find_runs

SIZE = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine two OpenMP threads that wait for each other are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def network():
    return metrics.metric_network()


@pytest.fixture(scope="module")
def images():
    return load_image("grace_hopper", SIZE, "content"), load_image("brushstrokes", SIZE, "style")


def test_the_result_equal_to_the_content_has_perfect_content_scores(network, images):
    content, style = images
    panel = measure(content, content, [style], None, network)
    assert list(panel) == list(PANEL)
    assert panel["content_feature_error"] == 0.0
    assert panel["content_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert all(panel[f"style_{name}"] > 0 for name in metrics.YARDSTICKS)


def test_the_result_equal_to_the_style_has_zero_style_distances(network, images):
    content, style = images
    away = measure(content, content, [style], None, network)
    panel = measure(style, content, [style], None, network)
    for key in (*(f"style_{name}" for name in metrics.YARDSTICKS), "color_sliced_wasserstein"):
        assert abs(panel[key]) <= 1e-5 * away[key], key  # 0 up to float32 rounding
    assert panel["content_feature_error"] > 0.5 and panel["content_ssim"] < 0.5


def test_styles_are_resized_to_the_result_and_blended(network, images):
    content, style = images
    large = load_image("brushstrokes", 2 * SIZE, "style")
    panel = measure(style, content, [large], None, network)
    assert panel["style_mean_std"] < 0.05 * measure(content, content, [style], None, network)["style_mean_std"]
    one = measure(content, content, [style], None, network)
    both = measure(content, content, [style, content], [1.0, 0.0], network)
    assert both["style_sliced_wasserstein"] == pytest.approx(one["style_sliced_wasserstein"], rel=1e-5)
    half = measure(content, content, [style, content], [0.5, 0.5], network)
    assert half["style_mean_std"] == pytest.approx(0.5 * one["style_mean_std"], rel=1e-4)  # 0 against the content


def test_a_result_above_the_largest_side_is_measured_at_it(network, images):
    content, style = images
    large = load_image("grace_hopper", 2 * SIZE, "content")
    small = metrics._resized_long_side(large, SIZE)
    at_most = measure(large, content, [style], None, network, max_side=SIZE)
    assert at_most == measure(small, content, [style], None, network, max_side=None)  # the same numbers, exactly
    whole = measure(large, content, [style], None, network, max_side=None)
    assert whole["grain"] != at_most["grain"]  # measured at its own size, the panel differs


def test_grain_of_flat_noisy_and_constant_images():
    flat = torch.full((1, 3, 40, 40), 0.5)
    noisy = (flat + 0.05 * torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert grain(flat, flat).item() == 0.0
    assert grain(torch.full_like(flat, 0.9), noisy).item() == 0.0  # a constant result, whatever the content
    value = grain(noisy, flat).item()
    assert value > 0 and value == pytest.approx(20 * 0.05**2, rel=0.15)  # the Laplacian of white noise: 20 s^2
    # only where the content is flat: a sharp edge in the content hides the result's texture there
    edge = flat.clone()
    edge[..., 18:23] = torch.tensor([0.6, 0.7, 0.8, 0.9, 1.0])
    edge[..., 23:] = 1.0  # a ramp: not flat on columns 17-22
    stripes = flat.clone()
    stripes[..., 20:21] = 1.0  # a line on the content's edge: its Laplacian is non-zero on columns 19-21
    assert grain(stripes, edge).item() == 0.0 and grain(stripes, flat).item() > 0
    assert grain(noisy, torch.rand(1, 3, 40, 40)).isnan().item()  # nothing is flat in white noise
    assert grain(torch.cat([flat, noisy]), flat).shape == (2,)


# ----------------------------------------------------------------------------------------------------------- CLI


def fake_run(folder: Path, result: torch.Tensor, **config) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    save_png(result, folder / "result.png")
    settings = {"content": "grace_hopper", "style": "brushstrokes", "style_blend": None, "size": SIZE}
    settings.update(style_size=None, style_scale=1.0, ratio=1e-3, **config)
    OmegaConf.save(OmegaConf.create(settings), folder / ".hydra" / "config.yaml")
    (folder / "metrics.json").write_text(json.dumps({"loss_total": 1.5, "steps": 2}))
    return folder


def test_cli_measures_every_run_and_merges_the_panel(tmp_path, capsys, images):
    content, style = images
    fake_run(tmp_path / "sweep" / "0", content)
    fake_run(tmp_path / "sweep" / "1", style, style=["brushstrokes", "grace_hopper"], style_blend=[3, 1])
    failed = tmp_path / "sweep" / "2"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "failed").write_text("RuntimeError: out of memory\n")  # a failed job: no result.png
    assert [run.path for run in find_runs(tmp_path / "sweep", finished=True)] == [
        tmp_path / "sweep" / "0",
        tmp_path / "sweep" / "1",
    ]
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[0].split()[:3] == ["run", "content_err", "ssim"]
    assert out[1].split()[0] == "0" and out[2].split()[0] == "1"
    first = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert first["loss_total"] == 1.5 and first["steps"] == 2  # kept
    assert set(first["metrics"]) == set(PANEL)
    assert first["metrics"]["content_feature_error"] == 0.0 and first["metrics"]["content_ssim"] > 0.999
    second = json.loads((tmp_path / "sweep" / "1" / "metrics.json").read_text())["metrics"]
    assert second["style_gram"] > 0  # a quarter of grace_hopper in the blend
    # a run folder itself works too, and a rerun replaces the panel
    assert main([str(tmp_path / "sweep" / "0")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "."
    assert not [p for p in (tmp_path / "sweep" / "0").iterdir() if p.name.startswith(".metrics")]


def test_a_run_that_cannot_be_measured_is_a_warning(tmp_path, capsys, images):
    fake_run(tmp_path / "0", images[0])
    fake_run(tmp_path / "1", images[0], content="/no/such/photo.jpg")
    assert main([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "/no/such/photo.jpg" in captured.err
    assert "not measured" in captured.out.splitlines()[2]
    assert "metrics" not in json.loads((tmp_path / "1" / "metrics.json").read_text())


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, where):
    folder = tmp_path / where
    if where == "empty":
        (folder / "0").mkdir(parents=True)
        (folder / "0" / "result.png").write_bytes(b"")  # no .hydra/config.yaml: not a run
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no runs found in {folder}") and err.count("\n") == 1


def test_cli_in_a_subprocess_exits_2_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = run_process([sys.executable, "-m", "nst_lightning.metrics", str(tmp_path / "nothing")], env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: no runs found") and proc.stderr.count("\n") == 1
