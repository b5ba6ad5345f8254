"""docs/LIFTING.md's table: RepNet on Human3.6M with ground-truth and detected 2D, with and without the KCS critic
path and the camera loss, each row trained for the same CPU-time budget and evaluated on every S9/S11 test row.

    python benchmarks/lift_table.py --data h36m.npz --budget-min 25 --threads 1 --rows 0,1 --out rows01.json
    python benchmarks/lift_table.py --merge rows01.json rows23.json --out docs/lifting.json

Rows can run as separate processes (two 1-thread rows side by side on 2 cores: the budget is CPU time per
thread, so they do not eat into each other's budget); ``--merge`` joins their json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

from lightnets.bench.machine import cpu_info
from lightnets.lift import train_lifter
from lightnets.lift.train import CRITIC_FRAMES, LOSS_NORMS

ROWS = [  # (2D inputs, KCS path, camera loss)
    ("gt", True, True),
    ("gt", False, True),
    ("sh", True, True),
    ("sh", False, False),
]


def run_row(index: int, data: str, budget: float, threads: int, out_dir: Path, recipe: dict) -> dict:
    """One row of ROWS; ``recipe`` holds the lifter options and recipe overrides every row shares."""
    inputs, kcs, camera_loss = ROWS[index]
    start_cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    start = time.perf_counter()
    result = train_lifter(data, inputs=inputs, kcs=kcs, camera_loss=camera_loss, out=out_dir / f"row{index}",
                          exist_ok=True, threads=threads, budget_min=budget, epochs=100, progress=False, **recipe)
    train_cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - start_cpu  # the final test evaluation included
    metrics = result.metrics
    return {"row": index, "inputs": inputs, "kcs": kcs, "camera_loss": camera_loss, "budget_min": budget,
            "threads": threads, "train_cpu_min": round(train_cpu / 60, 1),
            "wall_min": round((time.perf_counter() - start) / 60, 1), "epochs": result.history[-1]["epoch"],
            "steps": result.history[-1]["step"], "recipe": recipe, "metrics": metrics}


def markdown(rows: list[dict]) -> str:
    lines = ["| input 2D | KCS | camera loss | P1 MPJPE mm | P2 mm | N-MPJPE mm | 3DPCK % | AUC % | symmetry error mm "
             "| CPU-min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["row"]):
        m = r["metrics"]
        n_p1 = f"{m['n_p1_mm']:.1f}" if "n_p1_mm" in m else "-"  # rows measured before N-MPJPE was added
        lines.append(f"| {'GT' if r['inputs'] == 'gt' else 'SH detections'} | {'✓' if r['kcs'] else '✗'} | "
                     f"{'✓' if r['camera_loss'] else '✗'} | {m['p1_mm']:.1f} | {m['p2_mm']:.1f} | {n_p1} | "
                     f"{m['pck3d']:.1f} | {m['auc']:.1f} | {m['symmetry_mm']:.1f} | {r['train_cpu_min']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Human3.6M npz (3d-pose-baseline layout)")
    parser.add_argument("--rows", default="0,1,2,3", help="which rows of ROWS to train, comma-separated")
    parser.add_argument("--budget-min", type=float, default=25.0, help="training CPU minutes per thread per row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="runs/lift_table", help="folder for the rows' run folders")
    parser.add_argument("--shared-trunk", action="store_true", help="the authors' code's generator layout")
    parser.add_argument("--loss-norm", choices=LOSS_NORMS, default="frobenius",
                        help="frobenius (the paper) or l1 (the authors' code)")
    parser.add_argument("--critic-frame", choices=CRITIC_FRAMES, default="camera",
                        help="the critic's 3D poses as the cameras see them, or each in its own torso frame")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of the lifting recipe's 256")
    parser.add_argument("--lr", type=float, default=None, help="instead of the lifting recipe's 1e-3")
    parser.add_argument("--merge", nargs="*", default=None, help="join these json files instead of training")
    parser.add_argument("--out", required=True, help="json to write")
    args = parser.parse_args()
    if args.merge:
        rows = [row for path in args.merge for row in json.loads(Path(path).read_text())["rows"]]
        machine = json.loads(Path(args.merge[0]).read_text())["machine"]
    else:
        cpu = cpu_info()
        machine = {"cpu": cpu.name, "flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                                                if f in cpu.flags], "python": platform.python_version()}
        recipe = {"shared_trunk": args.shared_trunk, "loss_norm": args.loss_norm, "critic_frame": args.critic_frame}
        recipe.update({k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr)) if v is not None})
        rows = [run_row(int(i), args.data, args.budget_min, args.threads, Path(args.runs), recipe)
                for i in args.rows.split(",")]
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
