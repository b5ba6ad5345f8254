"""The interface every lightnets model answers: stages, features, head, classifier reset."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LightnetsError
from ..layers.conv import Conv2dTFSame


@dataclass(frozen=True)
class FeatureInfo:
    """One stage's output: its channels, its stride relative to the input, and its module name."""

    channels: int
    stride: int
    module: str


def check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise LightnetsError(f"num_classes must be an integer >= 1, got {num_classes!r}")


def check_in_chans(in_chans: int) -> None:
    if not isinstance(in_chans, int) or in_chans < 1:
        raise LightnetsError(f"in_chans must be an integer >= 1, got {in_chans!r}")


def check_multiplier(name: str, value: float) -> None:
    if not value > 0:
        raise LightnetsError(f"{name} must be > 0, got {value!r}")


class ClassifierHead(nn.Module):
    """Global average pool, optional 1x1 'head' layer (MobileNetV3's efficient last stage), dropout, linear.

    ``reset_classifier`` swaps only ``fc`` so a pretrained head layer is kept.
    """

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.0,
                 hidden_chs: int = 0, hidden_act: type[nn.Module] = nn.Hardswish) -> None:
        super().__init__()
        self.in_chs = in_chs
        self.pool = nn.AdaptiveAvgPool2d(1)
        if hidden_chs > 0:
            # A 1x1 conv with bias on the pooled 1x1 map: the same as a linear layer, kept a conv as in the paper.
            self.hidden = nn.Sequential(nn.Conv2d(in_chs, hidden_chs, 1), hidden_act())
            self.num_features = hidden_chs
        else:
            self.hidden = nn.Identity()
            self.num_features = in_chs
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.flatten(self.hidden(self.pool(x))))
        return x if pre_logits else self.fc(x)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (buffers, not parameters), whatever the train/eval mode:
    the state-dict keys of ``nn.BatchNorm2d``, so checkpoints load into either."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.eps = bn.eps
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(bn, name).detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


FROZEN_BF16 = "bf16-frozen"  # a run's amp: fp32 training; only the frozen stem and stages compute in bf16


def autocast_for(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """The autocast around a whole forward pass for a run's ``amp``. ``FROZEN_BF16`` has none: the model casts its
    own frozen prefix (``set_frozen_amp``), since bf16 backward of the trained layers can cost more than it saves."""
    if amp not in (None, "bf16", "fp16", FROZEN_BF16):
        raise LightnetsError(f"amp must be None, 'bf16', 'fp16' or {FROZEN_BF16!r}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise LightnetsError(f"fp16 autocast needs a CUDA device (this one is {device.type}); use bf16")
    if amp in (None, FROZEN_BF16):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def set_frozen_amp(model: nn.Module, amp: str | None) -> None:
    """Make every ``LightNet`` in ``model`` run its frozen prefix in bf16 when ``amp`` is ``FROZEN_BF16`` (and in
    the precision around it otherwise)."""
    for module in model.modules():
        if isinstance(module, LightNet):
            module.frozen_bf16 = amp == FROZEN_BF16


def _freeze(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child))
        else:
            _freeze(child)
    for p in module.parameters(recurse=False):
        p.requires_grad_(False)


class LightNet(nn.Module):
    """Base class: a ``stem``, a list of ``stages`` (each ends at a new stride), an optional
    ``final`` layer on the last stage (a 1x1 conv, say) and a ``head``.

    Subclasses build those four attributes and ``feature_info``; this class supplies the
    shared API (timm-style) so training, benchmarking and detection treat every family alike.
    """

    stem: nn.Module
    stages: nn.ModuleList
    final: nn.Module
    head: ClassifierHead
    feature_info: list[FeatureInfo]
    frozen_stages = 0  # set by freeze_stages
    frozen_bf16 = False  # set by set_frozen_amp

    def __init__(self, num_classes: int, in_chans: int) -> None:
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans

    @property
    def total_stride(self) -> int:
        return self.feature_info[-1].stride

    @property
    def num_features(self) -> int:
        """Width of the vector the classifier sees."""
        return self.head.num_features

    @property
    def final_chs(self) -> int:
        """Channels of ``forward_features``' map (after the final layer, before pooling): a dense head's input."""
        return self.head.in_chs

    def check_input(self, x: torch.Tensor) -> None:
        """Reject inputs of the wrong rank, channels, or too small for the network's total stride."""
        if x.ndim != 4:
            raise LightnetsError(f"expected a 4-D batch (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise LightnetsError(f"expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if min(x.shape[2], x.shape[3]) < self.total_stride:
            raise LightnetsError(
                f"input {x.shape[2]}x{x.shape[3]} is too small for {type(self).__name__}: its total stride is "
                f"{self.total_stride}, so height and width must be at least {self.total_stride}"
            )

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage (strides as in ``feature_info``), for a detection neck."""
        self.check_input(x)
        prefix = self.frozen_stages if self.frozen_bf16 else 0
        dtype = x.dtype
        with torch.autocast(x.device.type, dtype=torch.bfloat16) if prefix else contextlib.nullcontext():
            x = self.stem(x)
            outs = []
            for stage in self.stages[:prefix]:
                x = stage(x)
                outs.append(x)
        if prefix:  # the trained layers see the input's precision again
            x = x.to(dtype)
            outs = [out.to(dtype) for out in outs]
        for stage in self.stages[prefix:]:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling (after the final 1x1 layer where there is one)."""
        return self.final(self.forward_stages(x)[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def drop_classifier(self) -> None:
        """Dense tasks use only the stages: the final block and the classifier become identities, so parameter
        counts and optimisers see only what is trained."""
        self.final = nn.Identity()
        self.head = nn.Identity()

    def freeze_stages(self, count: int) -> None:
        """Fine-tuning: fix the stem and the first ``count`` stages (weights and batch-norm statistics), so the
        early, generic features of pretrained weights are kept and cost no backward pass."""
        if not 0 <= count <= len(self.stages):
            raise LightnetsError(f"can freeze 0 to {len(self.stages)} stages of {type(self).__name__}, got {count}")
        if count == 0:
            return
        for module in [self.stem, *self.stages[:count]]:
            _freeze(module)
        self.frozen_stages = max(self.frozen_stages, count)

    def dilate(self, output_stride: int) -> None:
        """Keep the resolution at ``output_stride`` (DeepLab's atrous backbone): each later stage runs its
        downsampling convolution at stride 1 and dilates every spatial convolution and pool of the stage by the
        stride it gave up (2, then 4), so receptive fields and parameters stay those of the strided network.

        Odd pooling windows are padded to keep the size; an even one (a 2x2 average pool) cannot keep the size at
        stride 1 and is refused.
        """
        strides = [info.stride for info in self.feature_info]
        if output_stride < 1 or output_stride & (output_stride - 1) or output_stride > strides[-1]:
            raise LightnetsError(f"output_stride must be a power of two from 1 to {type(self).__name__}'s total "
                                 f"stride {strides[-1]}, got {output_stride!r}")
        for index, (stage, stride) in enumerate(zip(self.stages, strides, strict=True)):
            if stride <= output_stride:
                continue
            rate = stride // output_stride
            for module in stage.modules():
                if isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1:
                    _dilate_conv(module, rate)
                elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.stride not in (1, (1, 1)):
                    _undo_pool_stride(module, type(self).__name__, index)
            self.feature_info[index] = dataclasses.replace(self.feature_info[index], stride=output_stride)

    def get_classifier(self) -> nn.Linear:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last linear layer with a freshly initialised one for ``num_classes`` classes."""
        check_num_classes(num_classes)
        fc = nn.Linear(self.head.num_features, num_classes)
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)
        self.head.fc = fc.to(self.head.fc.weight.device, self.head.fc.weight.dtype)
        self.num_classes = num_classes


def _dilate_conv(conv: nn.Conv2d, rate: int) -> None:
    """Stride 1 and dilation ``rate``, with the 'same' padding for it (a TF-"SAME" conv pads itself at run time)."""
    conv.stride = (1, 1)
    conv.dilation = (rate, rate)
    if not isinstance(conv, Conv2dTFSame):
        conv.padding = tuple(rate * (k - 1) // 2 for k in conv.kernel_size)


def _undo_pool_stride(pool: nn.MaxPool2d | nn.AvgPool2d, model: str, stage: int) -> None:
    kernel = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
    if kernel % 2 == 0:
        raise LightnetsError(f"{model} downsamples stage {stage} with a {kernel}x{kernel} pool, which cannot keep "
                             "the resolution at stride 1; use an output stride of at least that stage's stride")
    pool.stride, pool.padding, pool.ceil_mode = 1, kernel // 2, False


def cifar_strides(strides: Sequence[int], cifar: bool) -> list[int]:
    """The blocks' strides as built. For the ``_cifar`` variants (32x32 inputs) the first stride-2 block runs at
    stride 1, which with the stem also at stride 1 takes the total stride from 32 to 8 (a 4x4 final map), as the
    source experiments did."""
    built, dropped = [], not cifar
    for stride in strides:
        if stride == 2 and not dropped:
            stride, dropped = 1, True
        built.append(stride)
    return built


def build_stages(
    blocks: list[tuple[nn.Module, int, bool]], stem_chs: int, stem_stride: int
) -> tuple[nn.ModuleList, list[FeatureInfo]]:
    """Group ``(block, stride, starts_stage)`` triples into stages and describe each stage's output.

    ``starts_stage`` follows the paper's layout (a new stage where the ImageNet network downsamples),
    so a CIFAR variant that drops a stride keeps the same stages, only with smaller strides.
    """
    groups: list[list[nn.Module]] = []
    strides: list[int] = []
    channels: list[int] = []
    stride, chs = stem_stride, stem_chs
    for block, block_stride, starts_stage in blocks:
        if starts_stage or not groups:
            groups.append([])
            strides.append(stride)
            channels.append(chs)
        stride *= block_stride
        chs = block.out_chs
        groups[-1].append(block)
        strides[-1], channels[-1] = stride, chs
    stages = nn.ModuleList(nn.Sequential(*g) for g in groups)
    info = [FeatureInfo(c, s, f"stages.{i}") for i, (c, s) in enumerate(zip(channels, strides, strict=True))]
    return stages, info


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics and affine terms, as after training. Fresh batch norms are
    identities, which would hide a wrong fold, export, epsilon or order when random-weight models are compared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
