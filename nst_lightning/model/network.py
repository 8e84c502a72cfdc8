"""The network interface: a frozen convolutional network whose named layers give features.

``FeatureNetwork`` is built from named stages run in order (``conv1_1`` = a convolution and its ReLU, ``pool1``, ...)
and knows, from its own modules, what the objective, the memory plan and exact tiles ask of a network:

- ``layer_names``: every layer a user may name, in network order;
- ``channels(layer)``: N_l, the feature maps of a layer; ``stride(layer)``: how many input pixels one of its
  positions steps over (1, 2, 4, ...);
- ``reach(layer)``: how many input pixels beyond a position's own block its value depends on, from the kernels,
  strides and paddings of the convolutions and poolings before it (the receptive field's radius as tiles need it:
  VGG19's conv5_1 reaches 70 px; its field is 156 px wide);
- ``forward(image, layers)``: the features of ``layers``, computed up to the deepest of them.

A network of your own (any torchvision model's layers, say) subclasses it: give the stages and, if its weights
want another input than RGB in [0, 1], override ``preprocess``; its YAML node (``_target_``) makes it
``network=your_network``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nst_lightning.util.errors import NSTError


@dataclass(frozen=True)
class Geometry:
    """Where a layer's position p looks in the input: pixels [p stride - left, p stride - left + size)."""

    channels: int
    stride: int
    size: int  # the receptive field's width
    left: int  # the padding it sees to the left of (above) position 0

    @property
    def reach(self) -> int:
        """Input pixels beyond the position's own block [p stride, (p + 1) stride) it depends on, on either side."""
        return max(self.left, self.size - self.left - self.stride)


def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    children = list(module.children())
    if not children:
        yield module
    for child in children:
        yield from _leaves(child)


def _pair(value: int | tuple[int, ...]) -> int:
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise NSTError(f"a kernel, stride or padding of {value}: only square ones are supported")
        return int(value[0])
    return int(value)


def geometries(stages: Sequence[tuple[str, nn.Module]], in_channels: int = 3) -> dict[str, Geometry]:
    """Each stage's output geometry, found by walking its convolutions and poolings in order (activation functions
    and other pointwise modules change nothing)."""
    channels, stride, size, left = in_channels, 1, 1, 0
    out = {}
    for name, stage in stages:
        for leaf in _leaves(stage):
            if isinstance(leaf, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
                kernel, step = _pair(leaf.kernel_size), _pair(leaf.stride)
                dilation = _pair(getattr(leaf, "dilation", 1))
                left += _pair(leaf.padding) * stride
                size += (kernel - 1) * dilation * stride
                stride *= step
                if isinstance(leaf, nn.Conv2d):
                    channels = leaf.out_channels
        out[name] = Geometry(channels, stride, size, left)
    return out


class FeatureNetwork(nn.Module):
    """A frozen network of named stages; ``forward(image, layers)`` returns {layer: features}.

    ``channels_last``: run the convolutions in NHWC layout (faster on CPU, measured in benchmarks/); the same
    function, rounded differently.
    """

    where = ""  # named in error messages: " in VGG16"

    def __init__(self, stages: Sequence[tuple[str, nn.Module]], channels_last: bool = True) -> None:
        super().__init__()
        self.layer_names = tuple(name for name, _ in stages)
        self.stages = nn.ModuleList(stage for _, stage in stages)
        self.geometry = geometries(stages)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, image: Tensor) -> Tensor:
        """RGB in [0, 1] -> what the weights expect."""
        return image

    def check_layers(self, names: Iterable[str], what: str = "requested") -> None:
        """One line naming any layer this network does not have."""
        for name in names:
            if name not in self.geometry:
                raise NSTError(
                    f"unknown {what} layer '{name}'{self.where}; valid layers: {', '.join(self.layer_names)}"
                )

    def channels(self, layer: str) -> int:
        self.check_layers([layer])
        return self.geometry[layer].channels

    def stride(self, layer: str) -> int:
        self.check_layers([layer])
        return self.geometry[layer].stride

    def reach(self, layer: str) -> int:
        self.check_layers([layer])
        return self.geometry[layer].reach

    def deepest(self, layers: Iterable[str]) -> str:
        return max(layers, key=self.layer_names.index)

    def forward(self, image: Tensor, layers: Iterable[str] | None = None) -> dict[str, Tensor]:
        wanted = set(self.layer_names if layers is None else layers)
        self.check_layers(wanted)
        last = max(self.layer_names.index(name) for name in wanted)
        x, out = self.preprocess(image).contiguous(memory_format=self.memory_format), {}
        for name, stage in zip(self.layer_names[: last + 1], self.stages, strict=False):
            x = stage(x)
            if name in wanted:
                out[name] = x
        return out
