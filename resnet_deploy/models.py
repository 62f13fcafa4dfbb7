"""The ResNet family of He et al. (2016) and its pre-activation variant (He et al. 2016b).

One `ResNet` class is parameterized by block type and layer counts (Table 1 of the paper); each
named model is a small function registered with `@register_model`, as in timm. Parameter names
follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`), so a
torchvision state dict loads directly into the `imagenet`-stem, post-activation, option-B models.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from resnet_deploy.model_options import SHORTCUTS, STEMS

BASE_WIDTHS = (64, 128, 256, 512)

_REGISTRY: dict[str, Callable[..., "ResNet"]] = {}


def register_model(fn: Callable[..., "ResNet"]) -> Callable[..., "ResNet"]:
    """Add a model constructor to the zoo under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY, key=lambda n: (n.startswith("preact_"), _depth(n), n))


def create_model(name: str, **kwargs) -> "ResNet":
    """Build a registered model; keyword arguments override the `ResNet` defaults."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    model = _REGISTRY[name](**kwargs)
    model.config = {"name": name, **model.config}
    return model


def _depth(name: str) -> int:
    digits = "".join(ch for ch in name.split("_")[-1] if ch.isdigit())
    return int(digits) if digits else 0


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity with stride subsampling, extra channels zero-padded (parameter free)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x


def make_shortcut(in_planes: int, out_planes: int, stride: int, option: str, preact: bool) -> nn.Module | None:
    """The residual shortcut: None for identity, else option A, B or C of the paper."""
    shape_changes = stride != 1 or in_planes != out_planes
    if option == "A" and shape_changes:
        return ZeroPadShortcut(in_planes, out_planes, stride)
    if option == "C" or (option == "B" and shape_changes):
        conv = conv1x1(in_planes, out_planes, stride)
        return nn.Sequential(conv) if preact else nn.Sequential(conv, nn.BatchNorm2d(out_planes))
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; only the first one strides."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", preact: bool = False):
        super().__init__()
        out_planes = planes * self.expansion
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(in_planes if preact else planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_planes)
        self.downsample = make_shortcut(in_planes, out_planes, stride, shortcut, preact)

    def residual_bns(self) -> list[nn.BatchNorm2d]:
        return [] if self.preact else [self.bn2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            out = F.relu(self.bn1(x))
            identity = self.downsample(out) if self.downsample is not None else x
            out = self.conv1(out)
            out = self.conv2(F.relu(self.bn2(out)))
            return out + identity
        identity = self.downsample(x) if self.downsample is not None else x
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision's v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", preact: bool = False):
        super().__init__()
        out_planes = planes * self.expansion
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(in_planes if preact else planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes if preact else out_planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.downsample = make_shortcut(in_planes, out_planes, stride, shortcut, preact)

    def residual_bns(self) -> list[nn.BatchNorm2d]:
        return [] if self.preact else [self.bn3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            out = F.relu(self.bn1(x))
            identity = self.downsample(out) if self.downsample is not None else x
            out = self.conv1(out)
            out = self.conv2(F.relu(self.bn2(out)))
            out = self.conv3(F.relu(self.bn3(out)))
            return out + identity
        identity = self.downsample(x) if self.downsample is not None else x
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with a choice of block, depth, shortcut option, stem, width, input channels and classes.

    `stem="small"` is a 3x3/1 convolution for 28x28 input (no max-pool); `stem="imagenet"` is the
    paper's 7x7/2 convolution plus a 3x3/2 max-pool. `width` scales the stage widths 64..512.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        *,
        preact: bool = False,
        shortcut: str = "B",
        stem: str = "small",
        width: float = 1.0,
        in_channels: int = 1,
        num_classes: int = 10,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.config = {
            "block": block.__name__,
            "layers": list(layers),
            "preact": preact,
            "shortcut": shortcut,
            "stem": stem,
            "width": width,
            "in_channels": in_channels,
            "num_classes": num_classes,
        }
        self.preact = preact
        widths = [max(1, round(w * width)) for w in BASE_WIDTHS]
        self.in_planes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_channels, widths[0])
            self.maxpool = nn.Identity()
        # A pre-activation net normalizes the stem inside the first block, and once more at the end.
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1, shortcut)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2, shortcut)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2, shortcut)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2, shortcut)
        self.final_bn = nn.BatchNorm2d(self.in_planes) if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.in_planes, num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
        layers = []
        for index in range(blocks):
            layers.append(block(self.in_planes, planes, stride if index == 0 else 1, shortcut, self.preact))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    for bn in module.residual_bns():
                        nn.init.zeros_(bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))) if not self.preact else self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.preact:
            x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """Multiply-accumulates of convolutions and linear layers for one forward pass."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def _resnet(depth: int, **kwargs) -> ResNet:
    block, layers = _DEPTHS[depth]
    return ResNet(block, layers, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    return _resnet(18, **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    return _resnet(34, **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    return _resnet(50, **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    return _resnet(101, **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    return _resnet(152, **kwargs)


@register_model
def preact_resnet18(**kwargs) -> ResNet:
    return _resnet(18, **{**kwargs, "preact": True})


@register_model
def preact_resnet34(**kwargs) -> ResNet:
    return _resnet(34, **{**kwargs, "preact": True})


@register_model
def preact_resnet50(**kwargs) -> ResNet:
    return _resnet(50, **{**kwargs, "preact": True})


@register_model
def preact_resnet101(**kwargs) -> ResNet:
    return _resnet(101, **{**kwargs, "preact": True})


@register_model
def preact_resnet152(**kwargs) -> ResNet:
    return _resnet(152, **{**kwargs, "preact": True})
