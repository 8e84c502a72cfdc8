"""Beyond the paper, end to end on tiny synthetic images: several styles, colour, masks, style scale,
coarse-to-fine stages, total variation; and each option's misuse as one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, checked, cli_in_process, make_painting, pixels
from hydra.errors import ConfigCompositionException
from PIL import Image
from test_run import events

from nst_lightning.config.derive import loss_weights, stages
from nst_lightning.engine.outputs import hyperparameters
from nst_lightning.engine.run import build_module, run
from nst_lightning.model.color import color_stats, rgb_to_yiq
from nst_lightning.model.losses import gram_over_m
from nst_lightning.util.errors import NSTError


@pytest.fixture
def second_style(tmp_path):
    return make_painting(tmp_path / "painting2.png", seed=7)


def test_several_styles_blend_their_gram_targets(make_cfg, images, second_style):
    styles = f"style=[{images['style']},{second_style}]"
    module = build_module(make_cfg(styles, "style_blend=[3,1]"))
    net = module.objective.network
    a, b = net(module.held.prepared.styles[0]), net(module.held.prepared.styles[1])
    for name, target in {n: s[0].target for n, s in module.objective.styles.items()}.items():
        expected = 0.75 * gram_over_m(a[name])[0] + 0.25 * gram_over_m(b[name])[0]  # [3,1] normalised
        assert torch.allclose(target, expected, rtol=1e-5, atol=1e-6)
    equal = build_module(make_cfg(styles))  # default blend: equal
    expected = 0.5 * gram_over_m(a["conv1_1"])[0] + 0.5 * gram_over_m(b["conv1_1"])[0]
    assert torch.allclose(equal.objective.styles["conv1_1"][0].target, expected, rtol=1e-5, atol=1e-6)


def test_a_blend_of_one_style_is_that_style(make_cfg, images, second_style):
    only_first = build_module(make_cfg(f"style=[{images['style']},{second_style}]", "style_blend=[1,0]"))
    single = build_module(make_cfg())
    for name, target in {n: s[0].target for n, s in single.objective.styles.items()}.items():
        assert torch.allclose(only_first.objective.styles[name][0].target, target, rtol=1e-6, atol=1e-7)


def test_luminance_only_transfer_keeps_the_content_colours(make_cfg, images, tmp_path):
    run(make_cfg("preserve_color=luminance", "steps=4"), tmp_path / "run")
    result = torch.from_numpy(pixels(tmp_path / "run" / "result.png")).permute(2, 0, 1)[None]
    content = build_module(make_cfg()).held.prepared.content
    chroma_result, chroma_content = rgb_to_yiq(result)[:, 1:], rgb_to_yiq(content)[:, 1:]
    # Same I and Q as the photo wherever the joined colour did not clip (8-bit rounding aside).
    inside = ((result > 0.02) & (result < 0.98)).all(1, keepdim=True).expand_as(chroma_result)
    assert inside.float().mean() > 0.5
    assert torch.allclose(chroma_result[inside], chroma_content[inside], atol=0.01)
    lum_result, lum_content = rgb_to_yiq(result)[:, :1], rgb_to_yiq(content)[:, :1]
    assert float((lum_result - lum_content).abs().mean()) > 0.02  # the luminance was stylised


def test_histogram_mode_recolours_the_style_to_the_content(make_cfg):
    module = build_module(make_cfg("preserve_color=histogram"))
    (mean_s, cov_s), (mean_c, cov_c) = (
        color_stats(module.held.prepared.styles[0]),
        color_stats(module.held.prepared.content),
    )
    assert torch.allclose(mean_s, mean_c, atol=0.03)
    plain_mean, plain_cov = color_stats(build_module(make_cfg()).held.prepared.styles[0])
    assert float((plain_mean - mean_c).abs().max()) > 0.1  # it was not so before
    # The two-colour painting's covariance has rank 1: it can only come closer to the photo's, not equal it.
    assert float((cov_s - cov_c).norm()) < 0.6 * float((plain_cov - cov_c).norm())


def test_color_loss_pulls_the_colours_to_the_target(make_cfg, tmp_path):
    def distance(folder):
        mean, cov = color_stats(torch.from_numpy(pixels(folder / "result.png")).permute(2, 0, 1)[None])
        target_mean, target_cov = color_stats(build_module(make_cfg()).held.prepared.content)
        return float((mean - target_mean).pow(2).sum() + (cov - target_cov).pow(2).sum())

    free = run(make_cfg("steps=12"), tmp_path / "free")
    held = run(make_cfg("steps=12", "color_weight=1e4"), tmp_path / "held")  # tiny images: style dominates
    assert free.get("loss_color") is None and held["loss_color"] > 0
    assert distance(tmp_path / "held") < 0.5 * distance(tmp_path / "free")
    scalars = events(tmp_path / "held").Tags()["scalars"]
    assert "loss/color" in scalars


def test_content_mask_keeps_the_content_where_black(make_cfg, images, tmp_path):
    mask = np.zeros((40, 48), np.uint8)
    mask[:, :24] = 255  # style on the left half of the 48x40 photo only
    Image.fromarray(mask).save(tmp_path / "mask.png")
    run(make_cfg(f"content_mask={tmp_path / 'mask.png'}", "steps=4"), tmp_path / "run")
    result = pixels(tmp_path / "run" / "result.png")
    content = build_module(make_cfg()).held.prepared.content[0].permute(1, 2, 0).numpy()
    right, left = slice(18, None), slice(0, 14)  # clear of the resized mask's soft edge (48 -> 32 px)
    assert np.abs(result[:, right] - content[:, right]).max() <= 1 / 255 + 1e-6
    assert np.abs(result[:, left] - content[:, left]).mean() > 0.05


def test_style_scale_sets_the_style_image_size(make_cfg):
    assert max(build_module(make_cfg("size=48")).held.prepared.styles[0].shape[-2:]) == 48
    assert max(build_module(make_cfg("size=48", "style_scale=0.5")).held.prepared.styles[0].shape[-2:]) == 24
    assert max(build_module(make_cfg("size=48", "style_size=40")).held.prepared.styles[0].shape[-2:]) == 40


def test_coarse_to_fine_runs_each_stage_from_the_last(make_cfg, tmp_path):
    metrics = run(make_cfg("scales=[32,48]", "scale_steps=[3,2]"), tmp_path / "run")
    out = tmp_path / "run"
    first = json.loads((out / "stages" / "0_32px" / "metrics.json").read_text())
    assert first["size"] == [27, 32] and first["steps"] == 3 and first["stage"] == 0
    assert Image.open(out / "stages" / "0_32px" / "result.png").size == (32, 27)
    assert Image.open(out / "result.png").size == (48, 40)
    assert metrics["size"] == [40, 48] and metrics["steps"] == 2 and metrics["stage"] == 1
    assert metrics["stages"] == [[32, 3], [48, 2]]
    assert metrics["seconds_all_stages"] >= metrics["seconds"] + first["seconds"] * 0.99
    # The second stage started from the first stage's result, upsampled: not from white noise.
    start = build_module(make_cfg("size=48"), start=torch.zeros(1, 3, 27, 32))
    assert start.image.shape == (1, 3, 40, 48) and float(start.image.detach().abs().max()) == 0.0


def test_total_variation_is_logged_like_the_other_losses(make_cfg, tmp_path):
    metrics = run(make_cfg("tv_weight=1e3"), tmp_path / "run")
    assert metrics["loss_tv"] > 0
    assert "loss/tv" in events(tmp_path / "run").Tags()["scalars"]


def test_every_new_option_is_a_hyperparameter(make_cfg, second_style, images):
    cfg = make_cfg(
        f"style=[{images['style']},{second_style}]",
        "style_blend=[0.7,0.3]",
        "color_weight=1",
        "preserve_color=histogram",
        "scales=[32,48]",
        "style_scale=0.5",
        "tv_weight=2",
        "batch_sweep.ratio=[1e-3,1e-2]",
    )
    second = checked(cfg)[1]
    hp = hyperparameters(second, *loss_weights(second.config))  # each image of the batch has its own values
    assert hp["style_blend"] == "[0.7,0.3]" and hp["color_weight"] == 1 and hp["preserve_color"] == "histogram"
    assert hp["scales"] == "[32,48]" and hp["style_scale"] == 0.5 and hp["tv_weight"] == 2
    assert hp["content_mask"] == "None" and hp["temporal_weight"] == 0
    assert hp["ratio"] == 0.01 and hp["alpha"] == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["style_blend=[1,2,3]"], "style_blend has 3 values but style has 1 images"),
        (["style_blend=[-1]"], "a style_blend weight=-1.0 is not valid"),
        (["style_blend=[0]"], "style_blend is all zero"),
        (["style=[]"], "style=[] names no image"),
        (["style_scale=0"], "style_scale=0.0 is not valid"),
        (["style_size=32", "style_scale=0.5"], "style_size and style_scale both set"),
        (["color_weight=-1"], "color_weight=-1.0 is not valid"),
        (["preserve_color=luminance", "color_weight=1"], "color_weight has no use with preserve_color=luminance"),
        (["scales=[64,32]"], "must be increasing (coarse to fine"),
        (["scales=[8,32]"], "scales[0]=8 is too small for the deepest layer in use: use scales[0] >= 16"),
        (["scales=[32,64]", "scale_steps=[1]"], "scale_steps has 1 values but scales has 2"),
        (["scale_steps=[5]"], "scale_steps needs scales"),
        (["temporal_weight=1"], "temporal_weight > 0 needs temporal_target"),
    ],
)
def test_misuse_is_one_clear_line(make_cfg, overrides, message):
    with pytest.raises(NSTError, match=None) as info:
        checked(make_cfg(*overrides))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("color_target=painting", "Invalid value 'painting', expected one of [content, style]"),
        ("preserve_color=yes", "Invalid value 'yes', expected one of [none, luminance, histogram]"),
    ],
)
def test_choices_are_checked_by_hydra(make_cfg, override, message):
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg(override)
    assert message in str(info.value.__cause__)


def test_misuse_through_the_command_line(images, tmp_path):
    proc = cli_in_process(
        f"content={images['content']}",
        f"style=[{images['style']},{images['style']}]",
        "style_blend=[1]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_clean_error(proc, "style_blend has 1 values but style has 2 images")


def test_a_black_mask_is_refused(make_cfg, tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(NSTError, match="has no white area"):
        build_module(make_cfg(f"content_mask={tmp_path / 'black.png'}"))


def test_a_missing_mask_is_one_clear_line(make_cfg, tmp_path):
    with pytest.raises(NSTError, match="content_mask") as info:
        build_module(make_cfg(f"content_mask={tmp_path / 'nowhere.png'}"))
    assert "\n" not in str(info.value)


def test_style_blend_preset_sweeps_from_one_style_to_the_other():
    from hydra import compose, initialize_config_dir

    from nst_lightning.config.schema import conf_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=style_blend"], return_hydra_config=True)
    assert len(cfg.style) == 2
    blends = str(cfg.hydra.sweeper.params.style_blend).split("],[")
    assert len(blends) == 5 and blends[0] == "[1,0" and blends[2] == "0.5,0.5" and blends[-1] == "0,1]"


def test_a_coarse_stage_keeps_the_balance_of_the_output_size(make_cfg, tmp_path):
    """L_content grows with the positions M_l (~ size^2), E_l does not: stage alpha = alpha (reference / stage)^2,
    the reference being the output size when reference_size=null (the paper's objective at the output)."""
    config = make_cfg("scales=[32,64]", "scale_steps=[1,1]", "reference_size=null", "ratio=1e-3")
    assert [(s.size, s.content_scale) for s in stages(config)] == [(32, 4.0), (64, 1.0)]
    config = make_cfg("scales=[32,64]", "scale_steps=[1,1]", "reference_size=128", "ratio=1e-3")
    assert [(s.size, s.content_scale) for s in stages(config)] == [(32, 16.0), (64, 4.0)]
    coarse = build_module(config, stage=stages(config)[0])
    assert coarse.objective.alpha.tolist() == pytest.approx([16e-3])  # the paper's alpha times the scale
    assert loss_weights(config)[0] == pytest.approx(1e-3)  # what is logged: the paper's alpha
    metrics = run(
        make_cfg("scales=[32,64]", "scale_steps=[1,1]", "reference_size=null", "ratio=1e-3"), tmp_path / "run"
    )
    assert metrics["content_scale"] == 1.0 and metrics["stage"] == 1
