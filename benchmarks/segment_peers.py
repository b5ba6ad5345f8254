"""Our LR-ASPP segmenter against torchvision's lraspp_mobilenet_v3_large: the same network, timed side by side.

Run it with the peers environment (torchvision beside a CPU torch; see PEERS.md), on a quiet machine:

    /work/peers/bin/python benchmarks/segment_peers.py --threads 1 --out docs/segment_peers.json

1. Parity. torchvision's model (random weights, batch norms given data-like statistics) is copied into ours built
   with torchvision's batch-norm epsilon 1e-3: the backbone through the key map ``mobilenet_v3.torchvision`` (by way
   of torchvision's classifier with the same features, which that map is written for), the head by hand. Parameter
   counts must agree and the eval logits on a random 360x480 image must agree to 1e-5; the head's two inputs (the
   stride-8 skip and the backbone's final features) are compared too, so a difference is placed where it arises.
   Then our ``reduced_tail`` backbone against torchvision's ``mobilenet_v3_large(reduced_tail=True, dilated=True)
   .features``, the same way.
2. Latency, batch 1, eval mode, at each size: both models eager and on the deploy path, the four timed side by side
   in alternating bursts (``lightnets.segment.latency.time_segmenters``). The deploy path is the same for both:
   batch norm folded into the convolutions by ``lightnets.deploy.fold_batchnorm``, exported by torch's dynamo ONNX
   exporter with height and width free, run by ONNX Runtime with all graph optimisations; ours through
   ``export_segmenter``, torchvision's through ``torch.export`` of the folded module. Both files are checked
   against their PyTorch module on ONNX Runtime before they are timed.

The exporter needs onnxscript. Where this environment lacks it, the two exports run in a second interpreter that
has it (``--export-python``, default: the project's ``.venv``), from files handed over in a temporary folder: our
checkpoint and torchvision's folded module as a ``torch.export`` program. Timing always runs here.

Weights are random: only equality and speed are compared. ``ours / theirs`` is the ratio of the two models' latencies
on the same path, from their per-round ratios to the same baseline. Exits 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pretrained_peers import import_peers  # noqa: E402

from lightnets import __version__, create_model  # noqa: E402
from lightnets.bench import count_params, cpu_info  # noqa: E402
from lightnets.bench.backends import BACKENDS, check_backends  # noqa: E402
from lightnets.deploy.onnx import DEFAULT_ATOL, _quiet, fold_batchnorm, run_outputs, tolerance  # noqa: E402
from lightnets.models.base import randomize_batch_norms  # noqa: E402
from lightnets.report import format_markdown  # noqa: E402
from lightnets.segment.deploy import fixed_input_size  # noqa: E402
from lightnets.segment.latency import SegmenterLatency, time_segmenters  # noqa: E402
from lightnets.segment.model import Segmenter, create_segmenter  # noqa: E402
from lightnets.weights.keymaps import to_lightnets  # noqa: E402

NUM_CLASSES = 21
OURS, THEIRS = "lightnets lraspp mobilenetv3_large_100", "torchvision lraspp_mobilenet_v3_large"
DEFAULT_BACKENDS = ("eager", "onnxruntime")
PARITY_ATOL = 1e-5
# torchvision's LR-ASPP head -> ours (our ConvBnAct is a Sequential too: conv 0, batch norm 1)
HEAD_KEYS = {"cbr.0": "branch.0", "cbr.1": "branch.1", "scale.1": "scale.1", "low_classifier": "low_classifier",
             "high_classifier": "high_classifier"}


class Logits(nn.Module):
    """torchvision's segmentation models return ``{"out": logits}``; the timing and the export want the tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def ours(**overrides: Any) -> Segmenter:
    """Our segmenter as torchvision builds its: MobileNetV3-Large at output stride 16, 128 head channels, eps 1e-3."""
    return create_segmenter("mobilenetv3_large_100", NUM_CLASSES, "lraspp", head_channels=128, output_stride=16,
                            bn_eps=1e-3, **overrides).eval()


def backbone_from_torchvision(features: nn.Module, torchvision: Any, target: Segmenter, **options: Any) -> None:
    """Load torchvision MobileNetV3 ``features`` into ``target.backbone`` with the ``mobilenet_v3.torchvision`` key
    map, which maps a whole classifier: torchvision's classifier (``options``) takes the features, our classifier of
    the same build gives the names, and the classifier heads, which the segmenters lack, are dropped."""
    peer = torchvision.models.mobilenet_v3_large(weights=None, dilated=True, **options)
    peer.features.load_state_dict(features.state_dict())
    classifier = create_model("mobilenetv3_large_100", bn_eps=1e-3, **options)
    state = to_lightnets("mobilenet_v3.torchvision", peer.state_dict(), classifier)
    target.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """The largest absolute difference, and the largest magnitude for scale."""
    return float((a - b).abs().max()), float(a.abs().max())


@torch.no_grad()
def parity(torchvision: Any, x: torch.Tensor) -> tuple[list[dict[str, Any]], Segmenter, nn.Module]:
    """The two parity checks (see the module's docstring), and the LR-ASPP pair with equal weights for timing."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    theirs = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
    randomize_batch_norms(theirs, seed=1)
    mine = ours()
    rows = []
    params = (count_params(mine), count_params(theirs))
    if params[0] == params[1]:
        backbone_from_torchvision(theirs.backbone, torchvision, mine)
        head = {}
        for key, tensor in theirs.classifier.state_dict().items():
            module, _, leaf = key.rpartition(".")
            head[f"{HEAD_KEYS[module]}.{leaf}"] = tensor
        mine.head.load_state_dict(head, strict=True)
        taps, stages = theirs.backbone(x), mine.backbone.forward_stages(x)
        first_block = mine.backbone.stages[mine.low_index][0]  # the skip: where stride 8 is first reached
        skip = max_diff(taps["low"], first_block(stages[mine.low_index - 1]))[0]
        features = max_diff(taps["high"], mine.backbone.final(stages[-1]))
        logits = max_diff(theirs(x)["out"], mine(x))
    else:
        features = logits = (float("nan"), float("nan"))
        skip = float("nan")
    rows.append({"check": "LR-ASPP segmenter", "ours": "create_segmenter(mobilenetv3_large_100, 21, lraspp, "
                 "head_channels=128, output_stride=16, bn_eps=1e-3)",
                 "theirs": "lraspp_mobilenet_v3_large(num_classes=21)", "params_ours": params[0],
                 "params_theirs": params[1], "skip_max_abs_diff": skip, "features_max_abs_diff": features[0],
                 "max_abs_diff": logits[0], "max_abs_output": logits[1]})

    peer = torchvision.models.mobilenet_v3_large(weights=None, reduced_tail=True, dilated=True).eval()
    randomize_batch_norms(peer, seed=2)
    tail = ours(reduced_tail=True)
    params = (count_params(tail.backbone), count_params(peer.features))
    if params[0] == params[1]:
        backbone_from_torchvision(peer.features, torchvision, tail, reduced_tail=True)
        features = max_diff(peer.features(x), tail.backbone.forward_features(x))
    else:
        features = (float("nan"), float("nan"))
    rows.append({"check": "reduced-tail backbone (features)", "ours": "reduced_tail=True, output_stride=16",
                 "theirs": "mobilenet_v3_large(reduced_tail=True, dilated=True).features", "params_ours": params[0],
                 "params_theirs": params[1], "skip_max_abs_diff": None, "features_max_abs_diff": features[0],
                 "max_abs_diff": features[0], "max_abs_output": features[1]})
    for row in rows:
        row["equal"] = row["params_ours"] == row["params_theirs"] and row["max_abs_diff"] <= PARITY_ATOL
    return rows, mine, Logits(theirs).eval()


def hand_over(mine: Segmenter, theirs: nn.Module, folder: Path, size: tuple[int, int]) -> int:
    """What the exports need, as files: our checkpoint, and torchvision's folded module as a ``torch.export``
    program with batch, height and width free (an interpreter without torchvision can load it). Returns the batch
    norms folded in torchvision's."""
    from lightnets.train import save_checkpoint

    meta = {"task": "segmentation", "segmenter": mine.config, "classes": [str(i) for i in range(NUM_CLASSES)]}
    save_checkpoint(folder / "ours", mine.state_dict(), meta)
    folded, folds = fold_batchnorm(theirs)
    free = torch.export.Dim.AUTO
    example = torch.randn(2, 3, *size)  # batch 2: a batch of 1 would be specialised to 1
    with _quiet():
        program = torch.export.export(folded, (example,), dynamic_shapes={"x": {0: free, 2: free, 3: free}})
    torch.export.save(program, folder / "theirs.pt2")
    return folds


def export_files(folder: Path, size: tuple[int, int]) -> dict[str, Any]:
    """The step that needs onnxscript: ``ours.onnx`` by ``export_segmenter`` (checked there), ``theirs.onnx`` by
    the same exporter from the handed-over program (checked by the caller, which has torchvision's module)."""
    from lightnets.deploy.onnx import check_opset
    from lightnets.segment.deploy import export_segmenter

    result = export_segmenter(folder / "ours", folder / "ours.onnx", input_size=size)
    program = torch.export.load(folder / "theirs.pt2")
    check_opset(18)
    with _quiet():
        torch.onnx.export(program, program.example_inputs[0], str(folder / "theirs.onnx"), input_names=["input"],
                          output_names=["logits"], opset_version=18, dynamo=True, external_data=False)
    return {"folded_bn": result.folded_bn, "max_abs_diff": result.max_abs_diff, "dynamic_size": result.dynamic_size}


def exports(mine: Segmenter, theirs: nn.Module, folder: Path, size: tuple[int, int], python: str | None,
            threads: int) -> dict[str, Any]:
    """Both ONNX files in ``folder``, exported here or by ``python`` (see the module's docstring); torchvision's is
    checked against its module on ONNX Runtime at ``size`` and at an odd size near half of it."""
    folds = hand_over(mine, theirs, folder, size)
    if importlib.util.find_spec("onnxscript") is not None:
        ours_export = export_files(folder, size)
    else:
        python = python or str(ROOT / ".venv" / "bin" / "python")
        command = [python, str(Path(__file__).resolve()), "--export-in", str(folder), "--sizes",
                   f"{size[0]}x{size[1]}", "--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the export in {python} failed (this environment has no onnxscript; give "
                             f"--export-python):\n{done.stderr[-2000:]}")
        ours_export = json.loads(done.stdout.splitlines()[-1])
    generator = torch.Generator().manual_seed(3)
    worst = 0.0
    for check in (torch.randn(1, 3, *size, generator=generator),
                  torch.randn(1, 3, size[0] // 2 + 1, size[1] // 2 + 3, generator=generator)):
        with torch.no_grad():
            reference = theirs(check).numpy()
        diff = float(np.abs(run_outputs(folder / "theirs.onnx", check.numpy())[0] - reference).max())
        if not diff <= tolerance(DEFAULT_ATOL["fp32"], reference):
            raise SystemExit(f"torchvision's ONNX file differs from its module by {diff:.3g} at {tuple(check.shape)}")
        worst = max(worst, diff)
    theirs_export = {"folded_bn": folds, "max_abs_diff": worst,
                     "dynamic_size": fixed_input_size(folder / "theirs.onnx") is None}
    return {"ours": ours_export, "theirs": theirs_export}


def ratio_rows(rows: list[SegmenterLatency]) -> list[dict[str, Any]]:
    """JSON records, each with ``ours_over_theirs``: on the same size and path, our ``vs_first`` over theirs."""
    first = {(r.name, r.input_size, r.backend): r.vs_first for r in rows}
    records = []
    for r in rows:
        theirs = first.get((THEIRS, r.input_size, r.backend))
        records.append({"model": r.name, "size": list(r.input_size), "path": r.backend, "status": r.status,
                        "params": r.params, "macs": r.macs, "threads": r.threads,
                        "median_ms": r.timing and r.timing.median_ms, "p90_ms": r.timing and r.timing.p90_ms,
                        "runs": r.timing and r.timing.runs, "vs_first": r.vs_first,
                        "ours_over_theirs": r.vs_first / theirs if r.name == OURS and r.vs_first and theirs else None})
    return records


def table(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return [{"model": r["model"], "size": "x".join(map(str, r["size"])),
             "path": "eager" if r["path"] == "eager" else f"deploy ({r['path']})", "params": f"{r['params']:,}",
             "GMACs": f"{r['macs'] / 1e9:.2f}", "median ms": num(r["median_ms"], ".1f"),
             "p90 ms": num(r["p90_ms"], ".1f"), "ours / theirs": num(r["ours_over_theirs"], ".2f"),
             **({} if r["status"] == "ok" else {"status": r["status"]})} for r in records]


def sizes_arg(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(h), int(w)) for h, w in (part.split("x") for part in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are HxW[,HxW...], e.g. 360x480,1024x2048; got {text!r}") from None


def backends_arg(text: str) -> list[str]:
    try:
        return check_backends(text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the figures as JSON here (e.g. docs/segment_peers.json)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every path (default 1)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per model and path")
    parser.add_argument("--backends", type=backends_arg, default=DEFAULT_BACKENDS,
                        metavar="NAME[,NAME...]", help=f"paths to time, of {', '.join(BACKENDS)} "
                        f"(default {','.join(DEFAULT_BACKENDS)}); the runtimes run the same deploy files")
    parser.add_argument("--sizes", type=sizes_arg, default=[(360, 480), (1024, 2048)], help="HxW[,HxW...]")
    parser.add_argument("--export-python", help="an interpreter with onnxscript for the exports, where this one "
                        "has none (default: the project's .venv)")
    parser.add_argument("--export-in", type=Path, help=argparse.SUPPRESS)  # the second interpreter's step
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.export_in:
        print(json.dumps(export_files(args.export_in, args.sizes[0])))
        return 0

    _, torchvision = import_peers()
    import onnxruntime

    machine = cpu_info().describe()
    print(f"CPU: {machine}; {args.threads} thread(s); torch {torch.__version__}, torchvision {torchvision.__version__}"
          f", onnxruntime {onnxruntime.__version__}, lightnets {__version__}")
    x = torch.randn(1, 3, 360, 480, generator=torch.Generator().manual_seed(0))
    checks, mine, theirs = parity(torchvision, x)
    print(format_markdown([{"check": c["check"], "params ours": f"{c['params_ours']:,}",
                            "params theirs": f"{c['params_theirs']:,}",
                            "skip max diff": "-" if c["skip_max_abs_diff"] is None else f"{c['skip_max_abs_diff']:.2g}",
                            "features max diff": f"{c['features_max_abs_diff']:.2g}",
                            "output max diff": f"{c['max_abs_diff']:.2g}", "max output": f"{c['max_abs_output']:.2g}",
                            "equal": "yes" if c["equal"] else "NO"} for c in checks]))
    with tempfile.TemporaryDirectory() as tmp:
        files = exports(mine, theirs, Path(tmp), args.sizes[0], args.export_python, args.threads)
        print(f"deploy files: ours {files['ours']}, theirs {files['theirs']}", flush=True)
        paths = {OURS: Path(tmp) / "ours.onnx", THEIRS: Path(tmp) / "theirs.onnx"}
        rows = []
        for size in args.sizes:
            rows += time_segmenters({OURS: mine, THEIRS: theirs}, size, args.backends, threads=args.threads,
                                    min_time=args.min_time, onnx_paths=paths)
            print(f"timed {size[0]}x{size[1]}", file=sys.stderr, flush=True)
    records = ratio_rows(rows)
    print(format_markdown(table(records)))
    if args.out:
        versions = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                    "onnxruntime": onnxruntime.__version__, "lightnets": __version__}
        report = {"machine": machine, "threads": args.threads, "min_time": args.min_time, "versions": versions,
                  "parity": checks, "exports": files, "rows": records}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(c["equal"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
