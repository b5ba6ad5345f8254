"""The MobileNetV3 paper's Table 7 at CPU scale, for docs/SEGMENTATION.md: one CamVid training run per row (made
by ``lightnets segment train ... --out DIR``), then this script reads the run folders and times every row's network.

    python benchmarks/segment_table.py --runs runs/lraspp-128,runs/raspp-256 --out docs/segmentation.json

Per row: how it was trained (head, filters, RF2, backbone, CPU budget, epochs), the val mIoU, pixel accuracy and
per-class IoU of the last checkpoint (from the run's ``val_metrics.jsonl``), params, MACs at 480x360, and batch-1
latency at 480x360 and 1024x2048 (Cityscapes size), eager and on the deploy path (batch norm folded, ONNX Runtime),
all rows of one size timed side by side (``lightnets.segment.segmenter_latency``) with random weights: latency
does not depend on them.

``--merge FILE`` keeps the rows of an earlier run of this script (their training figures and the machine they trained
on) beside the new ones, and times every row again here, so that one table's latencies all come from one machine.

    python benchmarks/segment_table.py --runs runs/fcn-128 --merge docs/segmentation.json --out docs/segmentation.json

Latency needs only each run's network (its ``config.json``), so it can be timed while the runs still train (paused,
for a quiet machine) and the training figures read once they end:

    python benchmarks/segment_table.py --runs runs/a,runs/b --latency-only --out latency.json
    python benchmarks/segment_table.py --runs runs/a,runs/b --latency-from latency.json --out docs/segmentation.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from segment_peers import backends_arg

from lightnets.bench.machine import cpu_info
from lightnets.report import format_markdown
from lightnets.segment import segmenter_latency

SIZES = ((360, 480), (1024, 2048))
HEAD_NAMES = {"lraspp": "LR-ASPP", "raspp": "R-ASPP", "fcn": "FCN"}


def run_row(run_dir: Path, here: str) -> dict[str, Any]:
    """What a finished run folder says about its training and its final validation metrics. A run from before
    lightnets recorded the machine is taken to have trained on this one (``here``), with a warning."""
    config = json.loads((run_dir / "config.json").read_text())
    if "machine" not in config:
        print(f"warning: {run_dir} does not record its machine; taken to be this one")
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [json.loads(line) for line in (run_dir / "val_metrics.jsonl").read_text().splitlines()][-1]
    last = history[-1]
    steps_per_epoch = config["train_images"] // config["recipe"]["batch_size"]
    segmenter = config["segmenter"]
    return {"run": run_dir.name, "segmenter": segmenter, "head": HEAD_NAMES[segmenter["head"]],
            "backbone": segmenter["backbone"], "filters": segmenter["head_channels"],
            "rf2": bool(segmenter.get("reduced_tail")), "output_stride": segmenter["output_stride"],
            "budget_min": config["recipe"]["budget_min"], "used_min": round(last["budget_s"] / 60, 1),
            "epochs": round(last["step"] / steps_per_epoch, 1), "threads": config["threads"],
            "crop": config["augment"]["crop"] if config["augment"] else None,
            "class_weights": config["class_weights"], "val_images": config["val_images"],
            "miou": final["miou"], "pixel_acc": final["pixel_acc"], "mean_acc": final["mean_acc"],
            "iou": {k[4:]: v for k, v in final.items() if k.startswith("iou_")},
            "best_epoch_miou": max(r["val_miou"] for r in history),
            "trained_on": config.get("machine", here)}


def merged_rows(earlier: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The earlier file's rows, each with the machine it trained on, then the new rows (which replace any earlier
    row of the same run name)."""
    previous = json.loads(earlier.read_text())
    names = {r["run"] for r in new}
    kept = [{"trained_on": previous["cpu"], **r} for r in previous["rows"] if r["run"] not in names]
    return kept + new


def timed_rows(rows: list[dict[str, Any]], args: argparse.Namespace, here: str) -> str:
    """Each row's params, MACs and latencies: timed here, or read from ``--latency-from`` (every row must be in it).
    Returns the machine they were measured on."""
    if args.latency_from:
        earlier = json.loads(Path(args.latency_from).read_text())
        by_run = {r["run"]: r for r in earlier["rows"]}
        missing = [r["run"] for r in rows if r["run"] not in by_run]
        if missing:
            raise SystemExit(f"{args.latency_from} has no latency for {', '.join(missing)}")
        for r in rows:
            r.update({key: by_run[r["run"]][key] for key in ("latency_ms", "params", "macs_480x360")})
        return earlier["cpu"]
    specs = [{"name": r["run"], **r["segmenter"]} for r in rows]
    timed = segmenter_latency(specs, sizes=SIZES, backends=args.backends, threads=args.threads,
                              min_time=args.min_time)
    for r in rows:
        r["latency_ms"] = {f"{t.input_size[1]}x{t.input_size[0]} {t.backend}": t.timing.median_ms
                           for t in timed if t.name == r["run"] and t.timing is not None}
        r["params"], r["macs_480x360"] = next((t.params, t.macs) for t in timed
                                              if t.name == r["run"] and t.input_size == SIZES[0])
    return here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, metavar="DIR[,DIR...]", help="segmentation run folders")
    parser.add_argument("--threads", type=int, default=1, help="threads for the latency (default 1)")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed runs per row, path and size")
    parser.add_argument("--backends", type=backends_arg, default=["eager", "onnxruntime"], metavar="NAME[,NAME...]",
                        help="paths to time (default eager,onnxruntime; openvino and openvino_bf16 run the same file)")
    parser.add_argument("--merge", default=None, metavar="FILE", help="keep the rows of this earlier --out file")
    latency = parser.add_mutually_exclusive_group()
    latency.add_argument("--latency-only", action="store_true",
                         help="time the runs' networks only, from their config.json (a run may still be training)")
    latency.add_argument("--latency-from", default=None, metavar="FILE",
                         help="take params, MACs and latencies from this --latency-only (or earlier --out) file")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.latency_only and args.merge:
        parser.error("--merge reads training figures, which --latency-only does not")
    here = cpu_info().describe()
    dirs = [Path(d) for d in args.runs.split(",")]
    missing = [str(d) for d in dirs if not (d / "config.json").is_file()]
    if missing:
        raise SystemExit(f"not a segmentation run folder (no config.json): {', '.join(missing)}")
    if args.latency_only:
        rows = [{"run": d.name, "segmenter": json.loads((d / "config.json").read_text())["segmenter"]} for d in dirs]
    else:
        rows = [run_row(d, here) for d in dirs]
        if args.merge:
            rows = merged_rows(Path(args.merge), rows)
    measured_on = timed_rows(rows, args, here)
    print(f"latency measured on {measured_on}, {args.threads} thread(s)")
    if args.latency_only:
        print(format_markdown([{"run": r["run"], **{f"ms {k}": f"{v:.0f}" for k, v in r["latency_ms"].items()}}
                               for r in rows]))
        write_rows(args.out, measured_on, args.threads, rows)
        return
    table = [{"backbone": r["backbone"], "head": r["head"], "RF2": "yes" if r["rf2"] else "no",
              "filters": str(r["filters"]), "OS": str(r["output_stride"]),
              "trained on": r["trained_on"].split(" (")[0], "CPU min": f"{r['used_min']:.1f}",
              "epochs": f"{r['epochs']:.1f}",
              "val mIoU %": f"{r['miou']:.1f}", "pixel acc %": f"{r['pixel_acc']:.1f}",
              "params M": f"{r['params'] / 1e6:.2f}", "GMACs 480x360": f"{r['macs_480x360'] / 1e9:.2f}",
              **{f"ms {key}": f"{value:.0f}" for key, value in r["latency_ms"].items()}} for r in rows]
    print(format_markdown(table))
    for machine in dict.fromkeys(r["trained_on"] for r in rows):
        print(f"trained on {machine}")
    classes = list(rows[0]["iou"])
    print(format_markdown([{"row": f"{r['backbone']} {r['head']}-{r['filters']}{' RF2' if r['rf2'] else ''}",
                            **{c: f"{r['iou'][c]:.1f}" for c in classes}} for r in rows]))
    write_rows(args.out, measured_on, args.threads, rows)


def write_rows(out: str | None, cpu: str, threads: int, rows: list[dict[str, Any]]) -> None:
    """The rows as JSON, with the machine their latencies were measured on."""
    if out:
        Path(out).write_text(json.dumps({"cpu": cpu, "threads": threads, "rows": rows}, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
