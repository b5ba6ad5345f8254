"""Rename rules between the ImageNet state dicts of timm, torchvision (and lukemelas' EfficientNet) and ours.

Each key map ("<family>.<source>") maps our modules to the peer's, part by part (stem, each block's convs, batch
norms and squeeze-excite, the final layer, the head), read off the model at hand. Blocks are matched in the order
they are read, never by stage index: we cut stages where the resolution halves, while timm and torchvision group
blocks by the rows of the paper's table (timm ``blocks.3.1`` can be our ``stages.2.4``). Every row of those
tables has its own output width, so a row is a run of consecutive blocks of equal output width.

Rules name modules, not tensors: a module's parameters and buffers keep their names (``weight``,
``running_mean``, ...), so a file that lacks some (``num_batches_tracked`` in old checkpoints) is still placed
tensor by tensor, and anything left over or missing is reported by name instead of shifting every copy after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..errors import LightnetsError

SAME = "same"  # the peer's module holds tensors of our shapes
LINEAR_AS_CONV = "linear_as_conv"  # the peer's Linear(i, o) is our 1x1 Conv2d(i, o) on a pooled 1x1 map


class _Rules:
    """Our module path -> (peer module path, how) for one model, checked as it is written."""

    def __init__(self, key_map: str, model: nn.Module) -> None:
        self.key_map = key_map
        self.model = model
        self.modules = dict(model.named_modules())
        self.pairs: dict[str, tuple[str, str]] = {}

    def module(self, ours: str) -> nn.Module:
        try:
            return self.modules[ours]
        except KeyError:
            raise self.misfit(f"it has no module {ours!r}") from None

    def misfit(self, why: str) -> LightnetsError:
        return LightnetsError(f"key map {self.key_map!r} does not fit this {type(self.model).__name__}: {why}")

    def add(self, ours: str, peer: str, how: str = SAME) -> None:
        self.module(ours)
        self.pairs[ours] = (peer, how)

    def child(self, ours: str, kind: type[nn.Module]) -> str:
        """The path of the one child of ``ours`` that is a ``kind`` (conv and norm are found by type, not index)."""
        names = [name for name, m in self.module(ours).named_children() if isinstance(m, kind)]
        if len(names) != 1:
            raise self.misfit(f"{ours!r} has {len(names)} {kind.__name__} children, expected 1")
        return f"{ours}.{names[0]}"

    def conv_bn(self, ours: str, conv: str, bn: str) -> None:
        """A conv-bn(-act) (``ConvBnAct``) or bn-act-conv (``BnActConv``) sequence: its conv and its batch norm."""
        self.add(self.child(ours, nn.Conv2d), conv)
        self.add(self.child(ours, nn.BatchNorm2d), bn)

    def is_present(self, ours: str) -> bool:
        return not isinstance(self.module(ours), nn.Identity)


def _blocks(model: nn.Module) -> list[str]:
    """Our blocks (every module of every stage) in the order the input meets them."""
    return [f"stages.{i}.{j}" for i, stage in enumerate(model.stages) for j in range(len(stage))]


def _rows(r: _Rules, blocks: list[str]) -> list[tuple[int, int]]:
    """Each block's (row, index in row) of the paper's table: a new row where the output width changes."""
    places: list[tuple[int, int]] = []
    width = None
    for block in blocks:
        out = r.module(block).out_chs
        if places and out == width:
            places.append((places[-1][0], places[-1][1] + 1))
        else:
            places.append((places[-1][0] + 1 if places else 0, 0))
        width = out
    return places


def _timm_mbconv(r: _Rules, ours: str, peer: str) -> None:
    """timm's blocks: ``DepthwiseSeparableConv`` where there is no expansion, else ``InvertedResidual``."""
    if r.is_present(f"{ours}.expand"):
        r.conv_bn(f"{ours}.expand", f"{peer}.conv_pw", f"{peer}.bn1")
        r.conv_bn(f"{ours}.depthwise", f"{peer}.conv_dw", f"{peer}.bn2")
        r.conv_bn(f"{ours}.project", f"{peer}.conv_pwl", f"{peer}.bn3")
    else:
        r.conv_bn(f"{ours}.depthwise", f"{peer}.conv_dw", f"{peer}.bn1")
        r.conv_bn(f"{ours}.project", f"{peer}.conv_pw", f"{peer}.bn2")
    if r.is_present(f"{ours}.se"):
        r.add(f"{ours}.se.reduce", f"{peer}.se.conv_reduce")
        r.add(f"{ours}.se.expand", f"{peer}.se.conv_expand")


def _torchvision_mbconv(r: _Rules, ours: str, peer: str) -> None:
    """torchvision's ``block`` Sequential numbers only the parts present: [expand], depthwise, [SE], project."""
    index = 0
    for part in ("expand", "depthwise", "se", "project"):
        if not r.is_present(f"{ours}.{part}"):
            continue
        if part == "se":
            r.add(f"{ours}.se.reduce", f"{peer}.{index}.fc1")
            r.add(f"{ours}.se.expand", f"{peer}.{index}.fc2")
        else:
            r.conv_bn(f"{ours}.{part}", f"{peer}.{index}.0", f"{peer}.{index}.1")
        index += 1


def _lukemelas_mbconv(r: _Rules, ours: str, peer: str) -> None:
    """lukemelas' ``MBConvBlock``: its parts are named, so no numbering depends on which are present."""
    if r.is_present(f"{ours}.expand"):
        r.conv_bn(f"{ours}.expand", f"{peer}._expand_conv", f"{peer}._bn0")
    r.conv_bn(f"{ours}.depthwise", f"{peer}._depthwise_conv", f"{peer}._bn1")
    if r.is_present(f"{ours}.se"):
        r.add(f"{ours}.se.reduce", f"{peer}._se_reduce")
        r.add(f"{ours}.se.expand", f"{peer}._se_expand")
    r.conv_bn(f"{ours}.project", f"{peer}._project_conv", f"{peer}._bn2")


def _mobilenet_v3_timm(r: _Rules) -> None:
    r.conv_bn("stem", "conv_stem", "bn1")
    blocks = _blocks(r.model)
    places = _rows(r, blocks)
    for block, (row, index) in zip(blocks, places, strict=True):
        _timm_mbconv(r, block, f"blocks.{row}.{index}")
    r.conv_bn("final", f"blocks.{places[-1][0] + 1}.0.conv", f"blocks.{places[-1][0] + 1}.0.bn1")  # a 'cn' row
    r.add("head.hidden.0", "conv_head")
    r.add("head.fc", "classifier")


def _mobilenet_v3_torchvision(r: _Rules) -> None:
    r.conv_bn("stem", "features.0.0", "features.0.1")
    blocks = _blocks(r.model)
    for n, block in enumerate(blocks, 1):
        _torchvision_mbconv(r, block, f"features.{n}.block")
    r.conv_bn("final", f"features.{len(blocks) + 1}.0", f"features.{len(blocks) + 1}.1")
    r.add("head.hidden.0", "classifier.0", LINEAR_AS_CONV)
    r.add("head.fc", "classifier.3")


def _mobilenet_v1_timm(r: _Rules) -> None:
    r.conv_bn("stem", "conv_stem", "bn1")
    blocks = _blocks(r.model)
    for block, (row, index) in zip(blocks, _rows(r, blocks), strict=True):
        r.conv_bn(f"{block}.0", f"blocks.{row}.{index}.conv_dw", f"blocks.{row}.{index}.bn1")
        r.conv_bn(f"{block}.1", f"blocks.{row}.{index}.conv_pw", f"blocks.{row}.{index}.bn2")
    r.add("head.fc", "classifier")


def _efficientnet_timm(r: _Rules) -> None:
    r.conv_bn("stem", "conv_stem", "bn1")
    blocks = _blocks(r.model)
    for block, (row, index) in zip(blocks, _rows(r, blocks), strict=True):
        _timm_mbconv(r, block, f"blocks.{row}.{index}")
    r.conv_bn("final", "conv_head", "bn2")
    r.add("head.fc", "classifier")


def _efficientnet_torchvision(r: _Rules) -> None:
    r.conv_bn("stem", "features.0.0", "features.0.1")
    blocks = _blocks(r.model)
    places = _rows(r, blocks)
    for block, (row, index) in zip(blocks, places, strict=True):
        _torchvision_mbconv(r, block, f"features.{row + 1}.{index}.block")
    last = places[-1][0] + 2
    r.conv_bn("final", f"features.{last}.0", f"features.{last}.1")
    r.add("head.fc", "classifier.1")


def _efficientnet_lukemelas(r: _Rules) -> None:
    r.conv_bn("stem", "_conv_stem", "_bn0")
    for n, block in enumerate(_blocks(r.model)):
        _lukemelas_mbconv(r, block, f"_blocks.{n}")
    r.conv_bn("final", "_conv_head", "_bn1")
    r.add("head.fc", "_fc")


def _densenet(r: _Rules) -> None:
    """torchvision's DenseNet, whose names timm kept: ``features.denseblockN.denselayerM``, ``transitionN``."""
    r.conv_bn("stem.0", "features.conv0", "features.norm0")
    blocks = transitions = 0
    for i, stage in enumerate(r.model.stages):
        for j, part in enumerate(stage):
            ours = f"stages.{i}.{j}"
            if isinstance(part, nn.ModuleList):  # a DenseBlock
                blocks += 1
                for k in range(len(part)):
                    peer = f"features.denseblock{blocks}.denselayer{k + 1}"
                    r.conv_bn(f"{ours}.{k}.0", f"{peer}.conv1", f"{peer}.norm1")
                    r.conv_bn(f"{ours}.{k}.1", f"{peer}.conv2", f"{peer}.norm2")
            else:  # a DenseTransition: BN-ReLU-conv, then a pool
                transitions += 1
                r.conv_bn(f"{ours}.0", f"features.transition{transitions}.conv",
                          f"features.transition{transitions}.norm")
    r.add(r.child("final", nn.BatchNorm2d), f"features.norm{blocks + 1}")
    r.add("head.fc", "classifier")


def _vovnet_timm(r: _Rules) -> None:
    """timm's VovNet cuts stages where we do (at each max-pool); OSA blocks are numbered within their stage."""
    for k in range(len(r.model.stem)):
        r.conv_bn(f"stem.{k}", f"stem.{k}.conv", f"stem.{k}.bn")
    for i, stage in enumerate(r.model.stages):
        osa = [j for j, part in enumerate(stage) if hasattr(part, "aggregate")]
        for n, j in enumerate(osa):
            ours, peer = f"stages.{i}.{j}", f"stages.{i}.blocks.{n}"
            for k in range(len(stage[j].layers)):
                r.conv_bn(f"{ours}.layers.{k}", f"{peer}.conv_mid.{k}.conv", f"{peer}.conv_mid.{k}.bn")
            r.conv_bn(f"{ours}.aggregate", f"{peer}.conv_concat.conv", f"{peer}.conv_concat.bn")
            if f"{ours}.ese" in r.modules and r.is_present(f"{ours}.ese"):
                r.add(f"{ours}.ese.fc", f"{peer}.attn.fc")
    r.add("head.fc", "head.fc")


_OLD_DENSE_LAYER = re.compile(
    r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _old_torchvision_densenet_key(key: str) -> str:
    """torchvision's first DenseNet files named ``denselayerN.norm.1.weight`` what is now ``norm1.weight``."""
    return _OLD_DENSE_LAYER.sub(r"\1\2.\3", key)


def _as_is(key: str) -> str:
    return key


# name -> (class our model must be, rules, how the peer's keys are read)
_KEY_MAPS: dict[str, tuple[str, Callable[[_Rules], None], Callable[[str], str]]] = {
    "mobilenet_v3.timm": ("MobileNetV3", _mobilenet_v3_timm, _as_is),
    "mobilenet_v3.torchvision": ("MobileNetV3", _mobilenet_v3_torchvision, _as_is),
    "mobilenet_v1.timm": ("MobileNetV1", _mobilenet_v1_timm, _as_is),
    "efficientnet.timm": ("EfficientNet", _efficientnet_timm, _as_is),
    "efficientnet.torchvision": ("EfficientNet", _efficientnet_torchvision, _as_is),
    "efficientnet.lukemelas": ("EfficientNet", _efficientnet_lukemelas, _as_is),
    "densenet.torchvision": ("DenseNet", _densenet, _old_torchvision_densenet_key),
    "densenet.timm": ("DenseNet", _densenet, _as_is),
    "vovnet.timm": ("VoVNet", _vovnet_timm, _as_is),
}
KEY_MAPS: tuple[str, ...] = tuple(_KEY_MAPS)


def _key_pairs(key_map: str, model: nn.Module) -> tuple[dict[str, tuple[str, str]], Callable[[str], str]]:
    """Our key -> (peer key, how) for every tensor of ``model`` the rules place, and the peer-key reader."""
    if key_map not in _KEY_MAPS:
        raise LightnetsError(f"unknown key map {key_map!r}; known: {', '.join(KEY_MAPS)}")
    cls, rules, read_key = _KEY_MAPS[key_map]
    if cls not in {c.__name__ for c in type(model).__mro__}:
        raise LightnetsError(f"key map {key_map!r} is for {cls} models, got a {type(model).__name__}")
    r = _Rules(key_map, model)
    rules(r)
    peers = [peer for peer, _ in r.pairs.values()]
    if len(set(peers)) != len(peers):
        twice = next(p for p in peers if peers.count(p) > 1)
        raise r.misfit(f"two of its modules map to the peer's {twice!r}")
    pairs = {}
    for key in model.state_dict():
        module, _, leaf = key.rpartition(".")
        if module in r.pairs:
            peer, how = r.pairs[module]
            pairs[key] = (f"{peer}.{leaf}", how)
    return pairs, read_key


def _shape(shape: torch.Size) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def to_lightnets(key_map: str, state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The peer's ``state_dict`` renamed (and reshaped) into ``model``'s keys, ready for a strict load.

    Raises one ``LightnetsError`` line naming the first peer key with no place, the first shape that does not
    fit, or the first of our keys left unfilled. A missing ``num_batches_tracked`` is taken from ``model``.
    """
    pairs, read_key = _key_pairs(key_map, model)
    ours_of = {peer: (ours, how) for ours, (peer, how) in pairs.items()}
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, tensor in state_dict.items():
        name = read_key(key)
        if name not in ours_of:
            raise LightnetsError(f"{key_map}: peer key {key!r} has no place in {type(model).__name__}")
        ours, how = ours_of[name]
        if ours in out:
            raise LightnetsError(f"{key_map}: peer keys {source[ours]!r} and {key!r} both fill our {ours!r}")
        want = own[ours].shape
        if how == LINEAR_AS_CONV and tensor.ndim == 2 and want[2:] == (1, 1) and tensor.shape == want[:2]:
            tensor = tensor.reshape(want)
        if tensor.shape != want:
            raise LightnetsError(f"{key_map}: peer key {key!r} of shape {_shape(tensor.shape)} does not fit our "
                                 f"{ours!r} of shape {_shape(want)}")
        out[ours], source[ours] = tensor, key
    for ours in own:
        if ours in out:
            continue
        if ours.endswith(".num_batches_tracked"):  # old checkpoints never saved it
            out[ours] = own[ours]
        elif ours in pairs:
            raise LightnetsError(f"{key_map}: our key {ours!r} is left unfilled: the peer's state dict lacks "
                                 f"{pairs[ours][0]!r}")
        else:
            raise LightnetsError(f"{key_map}: our key {ours!r} is left unfilled: no rule names its peer")
    return {ours: out[ours] for ours in own}


def from_lightnets(key_map: str, state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of ``to_lightnets``: our ``state_dict`` (of ``model``'s build) under the peer's names and shapes,
    to load into the peer (tests and the peer benchmark)."""
    pairs, _ = _key_pairs(key_map, model)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key not in pairs:
            raise LightnetsError(f"{key_map}: our key {key!r} has no peer name in {type(model).__name__}")
        peer, how = pairs[key]
        if how == LINEAR_AS_CONV and tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
            tensor = tensor.reshape(tensor.shape[:2])
        out[peer] = tensor
    return out
