"""Batched sweeps: K settings optimised as one batch must give the K images of K separate runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, cli_in_process, pixels

from nst_lightning.config.derive import images, style_weights
from nst_lightning.config.validate import validate_run
from nst_lightning.engine.run import build_module, run
from nst_lightning.optim.lbfgs import LBFGS
from nst_lightning.results.report import main as report_main
from nst_lightning.results.runs import find_runs
from nst_lightning.util.errors import NSTError


def test_batch_configs_give_one_setting_per_image(make_cfg):
    cfg = make_cfg("batch_sweep.ratio=[1e-3,1e-1]", "batch_sweep.content_layer=[conv4_2,conv2_2]")
    (name_a, _, a), (name_b, _, b) = images(cfg)
    assert name_a == "ratio=0.001,content_layer=conv4_2" and name_b == "ratio=0.1,content_layer=conv2_2"
    assert (a.ratio, a.content_layer, b.ratio, b.content_layer) == (1e-3, "conv4_2", 1e-1, "conv2_2")
    assert not a.batch_sweep.ratio and not b.batch_sweep.ratio  # each is a plain, single-image config
    # a list value is named as it is typed: a folder name without quotes or spaces
    names = [image.name for image in images(make_cfg("batch_sweep.style_layers=[[conv1_1],[conv1_1,conv2_1]]"))]
    assert names == ["style_layers=[conv1_1]", "style_layers=[conv1_1,conv2_1]"]


def test_swept_style_weights_may_be_typed_as_whole_numbers(make_cfg):
    """batch_sweep.style_weights=[[64,16,4,1,1],...] (ints, as a user types them) gives float weights per image."""
    cfg = make_cfg("batch_sweep.style_weights=[[64,16,4,1,1],[1,1,1,1,1.5]]")
    weights = [list(style_weights(image.config, lambda n: 64).values()) for image in validate_run(cfg)]
    assert weights == [[64.0, 16.0, 4.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.5]]


def _loss_and_gradient(module) -> tuple[torch.Tensor, torch.Tensor]:
    """One evaluation at the initial images: the K total losses and d(sum of them)/d(image)."""
    image = module.image.detach().clone().requires_grad_(True)
    total = module.objective(image)["total"]
    total.sum().backward()
    return total.detach(), image.grad


@pytest.mark.parametrize("channels_last", ["true", "false"])
def test_one_batched_evaluation_gives_each_image_its_own_loss_and_gradient(make_cfg, channels_last):
    # The exact claim, before any optimiser can amplify rounding: image k's loss and gradient in the batch are
    # those of its separate run, to float32 rounding (in both memory layouts of the network).
    sweep = ["batch_sweep.ratio=[1e-2,1e1,1e-3]", "batch_sweep.init=[content,noise,noise]", "batch_sweep.seed=[0,3,5]"]
    # white noise of full amplitude: the two noise starts differ clearly (a 1% noise would make the check below weak)
    layout = f"network.channels_last={channels_last}"
    sweep.append("init.scale=1.0")
    losses, gradients = _loss_and_gradient(build_module(make_cfg("size=64", layout, *sweep)))
    for k, (_, _, one) in enumerate(images(make_cfg(*sweep))):
        alone = make_cfg(
            "size=64", layout, f"ratio={one.ratio}", f"init={one.init.kind}", f"seed={one.seed}", "init.scale=1.0"
        )
        loss, gradient = _loss_and_gradient(build_module(alone))
        assert float(losses[k]) == pytest.approx(float(loss[0]), rel=1e-5)
        assert torch.allclose(gradients[k], gradient[0], rtol=0, atol=1e-5 * float(gradient.abs().max()))
    assert not torch.allclose(gradients[1], gradients[2], atol=1e-3 * float(gradients.abs().max()))


def test_batched_images_equal_separate_runs(make_cfg, tmp_path):
    sweep = ["batch_sweep.ratio=[1e-2,1e1]", "batch_sweep.init=[content,noise]", "batch_sweep.seed=[0,3]"]
    # recipe=paper: the tolerance below was measured with its objective
    batch = run(make_cfg("steps=6", "recipe=paper", *sweep), tmp_path / "batch")
    for (name, _, one), folder in zip(images(make_cfg(*sweep)), ("a", "b"), strict=True):
        settings = [f"ratio={one.ratio}", f"init={one.init.kind}", f"seed={one.seed}"]
        alone = run(make_cfg("steps=6", "recipe=paper", *settings), tmp_path / folder)
        together = batch["batch"][name]
        # The first evaluation agrees to float32 rounding (test above); L-BFGS then amplifies that rounding
        # (one run on 1 vs 2 threads ends 2.9% apart after 10 steps at 256 px: benchmarks/README.md).
        assert together["loss_total"] == pytest.approx(alone["loss_total"], rel=2e-3)
        assert together["loss_content"] == pytest.approx(alone["loss_content"], rel=2e-3)
        difference = np.abs(pixels(tmp_path / "batch" / name / "result.png") - pixels(tmp_path / folder / "result.png"))
        assert difference.max() <= 3 / 255
    losses = [m["loss_total"] for m in batch["batch"].values()]
    assert losses[0] != pytest.approx(losses[1], rel=0.05)  # two different problems, not one copied


def test_one_optimiser_history_per_image(make_cfg):
    module = build_module(make_cfg("batch_sweep.seed=[0,1,2]"))
    module.configure_optimizers()
    optimizer = module.inner_optimizer
    assert isinstance(optimizer, LBFGS)
    optimizer.step(lambda: module._closure())
    optimizer.step(lambda: module._closure())
    state = optimizer.state_dict()["state"][0]
    histories = [value for value in state.values() if torch.is_tensor(value) and value.dim() == 3]
    assert histories and all(h.shape[0] == 3 for h in histories)  # (K, m, N): one history per image


def test_a_batch_leaves_one_folder_per_image_that_the_report_reads(make_cfg, tmp_path):
    run(make_cfg("batch_sweep.ratio=[1e-3,1e-2,1e-1]", "steps=2"), tmp_path / "batch")
    folders = sorted(p.name for p in (tmp_path / "batch").iterdir() if (p / "result.png").is_file())
    assert folders == ["ratio=0.001", "ratio=0.01", "ratio=0.1"]
    summary = json.loads((tmp_path / "batch" / "metrics.json").read_text())
    assert set(summary["batch"]) == set(folders)
    runs = sorted(p.name for p in (tmp_path / "batch" / "tensorboard").iterdir())
    assert runs == folders  # one TensorBoard run per image, named by its value
    report_main([str(tmp_path / "batch"), "--out", str(tmp_path / "grid.png"), "--no-sources"])
    assert (tmp_path / "grid.png").is_file()


def test_the_report_keeps_the_batch_order(make_cfg, tmp_path):
    run(make_cfg("batch_sweep.content_layer=[conv4_2,conv1_1,conv2_2]", "steps=1"), tmp_path / "batch")
    runs = find_runs(tmp_path / "batch")  # the summary at the top is not a run; its images are
    assert [r.config["content_layer"] for r in runs] == ["conv4_2", "conv1_1", "conv2_2"]


def test_a_result_folder_is_never_reused(make_cfg, tmp_path):
    run(make_cfg("batch_sweep.seed=[0,1]", "steps=1"), tmp_path / "batch")
    with pytest.raises(NSTError, match=r"already holds a metrics\.json"):
        run(make_cfg("batch_sweep.seed=[0,1]", "steps=1"), tmp_path / "batch")


def test_mismatched_lengths_are_one_clear_line(images, tmp_path):
    proc = cli_in_process(
        f"content={images['content']}",
        f"style={images['style']}",
        "batch_sweep.ratio=[1e-3,1e-2]",
        "batch_sweep.seed=[0]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_clean_error(proc, "batch_sweep needs lists of the same, non-zero length")


def test_each_image_of_a_batch_is_validated(make_cfg):
    with pytest.raises(NSTError, match=r"ratio=-1\.0 is not valid"):
        validate_run(make_cfg("batch_sweep.ratio=[1e-3,-1]"))


def test_per_image_weights_change_only_their_image(make_cfg):
    """Image k's loss depends on image k's weights only: batch losses equal the single-image losses."""
    batch = build_module(make_cfg("batch_sweep.style_weight=[1,0.5]", "batch_sweep.ratio=[1e-3,1e-1]"))
    batch_losses = batch.objective(batch.image)["total"]
    for k, (ratio, beta) in enumerate([(1e-3, 1.0), (1e-1, 0.5)]):
        one = build_module(make_cfg(f"style_weight={beta}", f"ratio={ratio}"))
        with torch.no_grad():
            one.image.copy_(batch.image[k : k + 1])
        assert float(batch_losses[k].detach()) == pytest.approx(
            float(one.objective(one.image)["total"][0].detach()), rel=1e-4
        )
