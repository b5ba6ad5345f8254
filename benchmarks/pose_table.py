"""Figure 1 of docs/POSE.md: CPM on LSPet with 1, 2 and 3 stages at one CPU budget. Each row is a training run made
by ``lightnets pose train ... --out DIR``; this script reads the run folders (``config.json``, ``metrics.jsonl`` and
the final ``val_metrics.jsonl``: the last weights on the held-out records, flip test on), prints the tables and draws
every row's PCK curve into one png.

    python benchmarks/pose_table.py --runs runs/cpm1,runs/cpm2,runs/cpm3 --out docs/pose.json --curve docs/pose_pck.png

Per row: stages, backbone, crop, CPU minutes used, epochs, PCK@0.05/0.1/0.2 and the AUC of the curve to 0.5 (of the
torso size), the mean pixel error, PCK@0.2 per joint, params and MACs at the crop size, and batch-1 eager latency of
every row's network timed side by side, interleaved (random weights: latency does not depend on them).
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightnets.bench import count
from lightnets.bench.machine import cpu_info
from lightnets.bench.timing import thread_count, time_interleaved
from lightnets.pose import create_pose_machine, plot_pck_curve
from lightnets.report import format_markdown

STRICT = (0.05, 0.1, 0.2)


def run_row(run_dir: Path) -> dict[str, Any]:
    """What a finished run folder says about its training and its final PCK."""
    config = json.loads((run_dir / "config.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [json.loads(line) for line in (run_dir / "val_metrics.jsonl").read_text().splitlines()][-1]
    thresholds, curve = (np.asarray(v) for v in final["curve"])
    last = history[-1]
    steps_per_epoch = config["train_records"] // config["recipe"]["batch_size"]
    return {"run": run_dir.name, "pose_machine": config["pose_machine"], "stages": config["stages"],
            "backbone": config["backbone"], "pretrained": config.get("pretrained"), "input_size": config["input_size"],
            "freeze": config["recipe"]["freeze"], "budget_min": config["recipe"]["budget_min"],
            "used_min": round(last["budget_s"] / 60, 1), "epochs": round(last["step"] / steps_per_epoch, 1),
            "train_records": config["train_records"], "val_records": config["val_records"],
            "skipped_records": final["skipped_records"], "pck": {f"{t:g}": float(np.interp(t, thresholds, curve))
                                                                  for t in STRICT},
            "auc": final["auc"], "mean_px": final["mean_px"], "per_joint": final["per_joint"],
            "curve": final["curve"], "best_epoch_pck": max(r["val_pck"] for r in history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, metavar="DIR[,DIR...]", help="pose run folders")
    parser.add_argument("--threads", type=int, default=1, help="threads for the latency (default 1)")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed runs per row")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    parser.add_argument("--curve", default=None, help="draw the rows' PCK curves into this png")
    args = parser.parse_args()
    rows = [run_row(Path(d)) for d in args.runs.split(",")]
    models = {r["run"]: create_pose_machine(**r["pose_machine"]).eval() for r in rows}
    for r in rows:
        counts = count(models[r["run"]], r["input_size"])
        r["params"], r["macs"] = counts.params, counts.macs
    inputs = {r["run"]: torch.randn(1, 3, r["input_size"], r["input_size"]) for r in rows}
    with thread_count(args.threads), torch.inference_mode():
        timed = time_interleaved({name: partial(model, inputs[name]) for name, model in models.items()},
                                 min_time=args.min_time)
    for r in rows:
        r["latency_ms"] = timed.timings[r["run"]].median_ms
    cpu = cpu_info()
    print(f"CPU: {cpu.describe()}; latency on {args.threads} thread(s)")
    print(format_markdown([{"stages": str(r["stages"]), "backbone": r["backbone"], "crop": str(r["input_size"]),
                            "CPU min": f"{r['used_min']:.1f}", "epochs": f"{r['epochs']:.1f}",
                            **{f"PCK@{t} %": f"{100 * v:.1f}" for t, v in r["pck"].items()},
                            "AUC %": f"{r['auc']:.1f}", "mean px": f"{r['mean_px']:.1f}",
                            "params M": f"{r['params'] / 1e6:.2f}", "MMACs": f"{r['macs'] / 1e6:.0f}",
                            "ms": f"{r['latency_ms']:.1f}"} for r in rows]))
    joints = [j["joint"] for j in rows[0]["per_joint"]]
    print(format_markdown([{"stages": str(r["stages"]), **{name: f"{j['pck']:.1f}" for name, j in
                                                          zip(joints, r["per_joint"], strict=True)}} for r in rows]))
    if args.curve:
        curves = {f"{r['stages']} stage{'s' if r['stages'] > 1 else ''}": (np.asarray(r["curve"][0]),
                                                                            np.asarray(r["curve"][1])) for r in rows}
        plot_pck_curve(curves, Path(args.curve))
        print(f"wrote {args.curve}")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu.describe(), "threads": args.threads, "rows": rows},
                                             indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
