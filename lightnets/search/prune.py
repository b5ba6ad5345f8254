"""Filter removal on networks of the search space (NetAdapt's proposals): which layers can be narrowed, the
narrower architecture, and the narrower network holding the kept filters' trained weights.

Prunable layers, by name:

- ``block{i}`` (``i``: the block's index in the whole network, from 0): the expanded (middle) width of an
  inverted residual that has an expansion conv. Removing channel ``c`` drops row ``c`` of the expand conv
  and its batch norm, channel ``c`` of the depthwise conv and its batch norm, channel ``c`` of
  squeeze-excite's input and output, and column ``c`` of the project conv. Squeeze-excite keeps its width
  at a quarter of the expanded one (MobileNetV3's rule, as ``Arch.layers`` builds it), so its hidden
  units shrink too, again keeping the strongest.
  A residual block (stride 1, as wide out as in: every block of a stage but its first) may also go to 0
  channels: the block is removed, leaving its skip connection, which is what a residual block with no
  filters computes. On a CPU at batch 1 a small block's latency is mostly its fixed cost per operator
  (about 0.12 ms of a CIFAR member's 0.12-0.3 ms blocks on the 2-core development machine, whatever the
  width: see the latency table), which no number of filters removes; removing the block does.
- ``final``: the final 1x1 conv (its rows and batch norm; the columns of the layer after it).
- ``head``: the pooled hidden layer (its rows and bias; the classifier's columns).

Not prunable: stage output widths and the stem. The blocks of a stage add into one residual stream, so
its width is shared by every block of the stage and by the next stage's input: narrowing it is one
decision across a stage, not one layer's. Blocks without an expansion conv (the first stage's) are left
alone for the same reason: their depthwise width is their input width. Nor is a block narrowed to exactly
its input width, where ``InvertedResidual`` would drop the expansion conv and its trained weights.

The criterion is NetAdapt's: keep the filters with the largest L2 norm (the expand conv's rows for a
block, squeeze-excite's reduce rows for its hidden units, the final conv's rows, the hidden layer's
rows), in their original order. With a batch norm after the conv a filter's norm says little about its
importance, which is why NetAdapt fine-tunes every proposal and keeps the one that loses least.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import LightnetsError
from ..layers import InvertedResidual
from ..models.mnas_space import Arch, MnasSpaceNet

BN = ("weight", "bias", "running_mean", "running_var")


def prunable_widths(arch: Arch) -> dict[str, int]:
    """Every prunable layer of ``arch`` (see the module) and its width in channels."""
    _, *blocks, head = arch.layers(1)
    widths = {f"block{i}": b.expand_chs for i, b in enumerate(blocks) if b.expand_chs != b.in_chs}
    widths["final"] = head.final_chs
    if head.hidden_chs > 0:
        widths["head"] = head.hidden_chs
    return widths


def removable(arch: Arch, layer: str) -> bool:
    """Whether prunable ``layer`` is a residual block, which narrowing to 0 channels removes."""
    if not layer.startswith("block"):
        return False
    block = arch.layers(1)[1 + int(layer[5:])]
    return block.stride == 1 and block.in_chs == block.out_chs


def forbidden_width(arch: Arch, layer: str) -> int | None:
    """The width ``layer`` may not take: a block's input width (it would lose its expansion conv)."""
    return arch.layers(1)[1 + int(layer[5:])].in_chs if layer.startswith("block") else None


def narrower(arch: Arch, layer: str, channels: int) -> Arch:
    """``arch`` with prunable ``layer`` narrowed to ``channels``; a block's widths become explicit
    (``StageArch.mids``) for its whole stage, the final conv's ``Arch.final_chs``, the hidden layer's ``head``.
    0 channels removes a residual block (``removable``)."""
    widths = prunable_widths(arch)
    if layer not in widths:
        raise LightnetsError(f"{layer!r} is not a prunable layer of this architecture; prunable: {', '.join(widths)}")
    lowest = 0 if removable(arch, layer) else 1
    if not lowest <= channels < widths[layer] or channels == forbidden_width(arch, layer):
        raise LightnetsError(f"{layer} has {widths[layer]} channels; it can be narrowed to {lowest}.."
                             f"{widths[layer] - 1} channels except its input width, got {channels}")
    if layer == "final":
        return replace(arch, final_chs=channels)
    if layer == "head":
        return replace(arch, head=channels)
    index, first = int(layer[5:]), 0
    _, *blocks, _ = arch.layers(1)
    stages = list(arch.stages)
    for s, stage in enumerate(stages):
        if index < first + stage.layers:
            mids = [b.expand_chs for b in blocks[first:first + stage.layers]]
            mids[index - first] = channels
            kept = tuple(m for m in mids if m > 0)
            stages[s] = replace(stage, mids=kept, layers=len(kept))
            break
        first += stage.layers
    return replace(arch, stages=tuple(stages))


def strongest(weight: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (ascending) of the ``count`` rows of ``weight`` with the largest L2 norm."""
    return weight.detach().flatten(1).norm(dim=1).topk(count).indices.sort().values


def _cut(state: dict[str, torch.Tensor], keys: list[str], dim: int, keep: torch.Tensor) -> None:
    for key in keys:
        state[key] = state[key].index_select(dim, keep)


def prune(model: MnasSpaceNet, layer: str, channels: int) -> MnasSpaceNet:
    """A new network of ``narrower(model.arch, layer, channels)`` holding ``model``'s weights for the kept
    filters (those of largest L2 norm), so fine-tuning starts from what ``model`` learned. The weights
    load strictly, so a slip in the surgery is an error rather than a silently different network."""
    if channels == 0:
        return _without_block(model, int(layer[5:]), narrower(model.arch, layer, 0))
    arch = narrower(model.arch, layer, channels)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if layer.startswith("block"):
        index = int(layer[5:])
        name = _block_names(model)[index]
        block = model.get_submodule(name)
        keep = strongest(block.expand[0].weight, channels)
        _cut(state, [f"{name}.{part}.0.weight" for part in ("expand", "depthwise")]
             + [f"{name}.{part}.1.{b}" for part in ("expand", "depthwise") for b in BN], 0, keep)
        _cut(state, [f"{name}.project.0.weight"], 1, keep)
        se_chs = arch.layers(1)[1 + index].se_chs
        if se_chs:
            _cut(state, [f"{name}.se.reduce.weight"], 1, keep)
            _cut(state, [f"{name}.se.expand.weight", f"{name}.se.expand.bias"], 0, keep)
            hidden = strongest(state[f"{name}.se.reduce.weight"], se_chs)
            _cut(state, [f"{name}.se.reduce.weight", f"{name}.se.reduce.bias"], 0, hidden)
            _cut(state, [f"{name}.se.expand.weight"], 1, hidden)
    elif layer == "final":
        keep = strongest(model.final[0].weight, channels)
        _cut(state, ["final.0.weight"] + [f"final.1.{b}" for b in BN], 0, keep)
        _cut(state, ["head.hidden.0.weight" if arch.head > 0 else "head.fc.weight"], 1, keep)
    else:
        keep = strongest(model.head.hidden[0].weight, channels)
        _cut(state, ["head.hidden.0.weight", "head.hidden.0.bias"], 0, keep)
        _cut(state, ["head.fc.weight"], 1, keep)
    return _holding(model, _sibling(model, arch), state)


def _block_names(model: MnasSpaceNet) -> list[str]:
    """The module names of the network's inverted residuals, in order (``block{i}`` is the i-th)."""
    return [n for n, m in model.named_modules() if isinstance(m, InvertedResidual)]


def _without_block(model: MnasSpaceNet, index: int, arch: Arch) -> MnasSpaceNet:
    """A network of ``arch`` (``model.arch`` without residual block ``index``) holding every other weight
    of ``model``: blocks after the removed one move up a place, whatever modules hold them."""
    pruned = _sibling(model, arch)
    old = _block_names(model)
    source_of = dict(zip(_block_names(pruned), old[:index] + old[index + 1:], strict=True))
    state = model.state_dict()

    def source(key: str) -> str:
        for new, previous in source_of.items():
            if key.startswith(new + "."):
                return previous + key[len(new):]
        return key

    return _holding(model, pruned, {key: state[source(key)].detach().clone() for key in pruned.state_dict()})


def _sibling(model: MnasSpaceNet, arch: Arch) -> MnasSpaceNet:
    """A fresh network of ``arch`` with ``model``'s classes, input channels and dropout."""
    return MnasSpaceNet(model.num_classes, model.in_chans, arch, drop_rate=model.head.dropout.p)


def _holding(model: MnasSpaceNet, pruned: MnasSpaceNet, state: dict[str, torch.Tensor]) -> MnasSpaceNet:
    """``pruned`` with ``state`` loaded strictly, on ``model``'s device and in its train/eval mode."""
    pruned.load_state_dict(state)
    return pruned.to(next(model.parameters()).device).train(model.training)
