"""Convolution building blocks shared by every family."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ActFactory = Callable[[], nn.Module] | None


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without going more than 10% below it.

    Hardware and the reference implementations of MobileNetV2/V3 and EfficientNet round widths
    this way, so parameter counts only match the papers when we do the same.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


IN_PLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)


def in_place_activation(act: nn.Module) -> nn.Module:
    """Make an activation that follows a batch norm overwrite its input, as timm's and torchvision's do.

    Batch norm's backward needs only its input, so its output may be overwritten. ReLU's backward reads its own
    output, so in training it saves an activation-sized tensor; for hard swish and SiLU autograd keeps what their
    backward needs itself, so training memory is unchanged. Inference skips one activation-sized allocation per layer.
    """
    if isinstance(act, IN_PLACE_ACTIVATIONS):
        act.inplace = True
    return act


def tf_same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding TensorFlow's "SAME" adds along one axis of length ``size``.

    ``max((ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)``, written with
    integer arithmetic only (``-(-a // b)`` is ``ceil(a / b)``) so that tracing and export see plain ints.
    """
    return max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class Conv2dTFSame(nn.Conv2d):
    """A Conv2d that pads as TensorFlow's "SAME": ``ceil(size / stride)`` outputs, the padding worked out
    from the input size at run time and split so that the odd pixel goes to the bottom and right.

    It is an ``nn.Conv2d`` (same parameters, same state_dict keys) built with ``padding=0``; checkpoints
    ported from TensorFlow (timm's ``tf_*`` models) need it at stride 2, where symmetric padding would
    shift every output by half a pixel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = tf_same_pad(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = tf_same_pad(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return self._conv_forward(x, self.weight, self.bias)


def same_conv2d(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                bias: bool = False, tf_padding: bool = False) -> nn.Conv2d:
    """A conv with 'same' padding: symmetric ``(k - 1) // 2``, or TensorFlow's "SAME" with ``tf_padding``
    where the two differ (stride > 1 or an even kernel; at stride 1 an odd kernel pads symmetrically either way).
    """
    if tf_padding and (stride > 1 or kernel_size % 2 == 0):
        return Conv2dTFSame(in_chs, out_chs, kernel_size, stride, 0, groups=groups, bias=bias)
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=bias)


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation, with 'same' padding for odd kernels.

    ``tf_padding=True`` pads strided convs as TensorFlow's "SAME" (``Conv2dTFSame``), for weights trained there.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: ActFactory = nn.ReLU,
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        layers: list[nn.Module] = [
            same_conv2d(in_chs, out_chs, kernel_size, stride, groups, tf_padding=tf_padding),
            nn.BatchNorm2d(out_chs, eps=bn_eps),
        ]
        if act is not None:
            layers.append(in_place_activation(act()))
        super().__init__(*layers)
        self.out_chs = out_chs


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1's block: a 3x3 depthwise conv-bn-act then a 1x1 pointwise conv-bn-act.

    It costs ``1/N + 1/k^2`` of a standard k x k convolution with N outputs.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, kernel_size: int = 3,
                 act: ActFactory = nn.ReLU, bn_eps: float = 1e-5, tf_padding: bool = False) -> None:
        super().__init__(
            ConvBnAct(in_chs, in_chs, kernel_size, stride, groups=in_chs, act=act, bn_eps=bn_eps,
                      tf_padding=tf_padding),
            ConvBnAct(in_chs, out_chs, 1, act=act, bn_eps=bn_eps),
        )
        self.out_chs = out_chs


def init_weights(module: nn.Module) -> None:
    """The initialisation the MobileNet/EfficientNet papers' reference code uses.

    Convolutions: He normal (fan-out); BatchNorm: identity; Linear: small normal; biases zero.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

