"""Models without BatchNorm, so that every example's gradient is its own.

``logreg`` (multinomial logistic regression), ``mlp`` (one or more hidden layers), ``cnn`` (two
conv blocks with GroupNorm) and ``resnet`` (a small pre-activation-free ResNet with GroupNorm).
All are plain ``nn.Module`` s whose parameters work with ``torch.func.functional_call``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..core.catalog import MODELS


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, width: int = 64,
                depth: int = 1) -> nn.Module:
    """Construct model ``name`` for inputs of ``input_shape`` (without the batch dimension)."""
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if width < 1:
        raise ValueError(f"width: must be >= 1, got {width}")
    n_in = math.prod(input_shape)
    if name == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, num_classes))
    if name == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        d = n_in
        for _ in range(max(depth, 1)):
            layers += [nn.Linear(d, width), nn.Tanh()]
            d = width
        return nn.Sequential(*layers, nn.Linear(d, num_classes))
    if len(input_shape) != 3:
        raise ValueError(f"model: {name!r} needs image inputs [C, H, W], got shape {input_shape}")
    if name == "cnn":
        return SmallCNN(input_shape[0], num_classes, width)
    return ResNetGN(input_shape[0], num_classes, width)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8) or 1


class SmallCNN(nn.Module):
    """conv(3x3)-GN-tanh-avgpool, twice, then global average pooling and a linear classifier."""

    def __init__(self, in_ch: int, num_classes: int, width: int = 32):
        super().__init__()
        w1, w2 = max(width // 2, 1), width
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, w1, 3, padding=1), nn.GroupNorm(_groups(w1), w1), nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1), nn.GroupNorm(_groups(w2), w2), nn.Tanh(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(4 * w2, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a (projected when needed) identity shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.gn1 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.gn2 = nn.GroupNorm(_groups(cout), cout)
        self.short = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.GroupNorm(_groups(cout), cout))

    def forward(self, x):
        out = torch.relu(self.gn1(self.conv1(x)))
        return torch.relu(self.gn2(self.conv2(out)) + self.short(x))


class ResNetGN(nn.Module):
    """A ResNet-8-style network: a stem and three stages of one BasicBlock (widths w, 2w, 4w)."""

    def __init__(self, in_ch: int, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, 1, 1, bias=False),
                                  nn.GroupNorm(_groups(w), w), nn.ReLU())
        self.stages = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2),
                                    BasicBlock(2 * w, 4 * w, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))
