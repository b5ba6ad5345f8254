"""docs/POSE.md's figures 2 and 3: multiview bootstrapping on Human3.6M's real 4-view Stacked-Hourglass detections,
the SH detector standing in for the paper's detector (there are no H36M images here, so no detector is retrained).

    OMP_NUM_THREADS=1 python benchmarks/multiview_h36m.py --data h36m_sh_10hz.npz --subjects S9,S11 \
        --threshold 20 --top-n 5000 --sweep 10,15,30,40,60 --out /tmp/multiview_h36m.json

Figure 2: MPJPE of the triangulated points against the world ground truth, plain all-view DLT vs RANSAC over view
pairs; the error of the reprojected labels against the ground truth projected through each real camera (px), for all
frames and for the top-N frames by score, and by score-rank decile. Figure 3: one bootstrapping round: how many
frames and keypoints pass and how good the labels of the added frames are, above all in the views where the
detection itself was an outlier. SH gives no confidence: the score is the inlier count (ties broken by the mean
inlier reprojection error) and ``--lambda`` has nothing to act on.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from lightnets.bench.machine import cpu_info
from lightnets.lift.cameras import Camera
from lightnets.lift.data import load_h36m_arrays
from lightnets.lift.skeleton import FROM_H36M17, FROM_MPII, JOINTS
from lightnets.pose import bootstrap, mean_inlier_error, project_points, select_frames, triangulate_dlt


def load(path: str, subjects: list[int]) -> list[dict]:
    """Per subject: its 4 cameras, SH detections (frames, 16, 4, 2) px and world ground truth (frames, 16, 3) mm,
    both in lightnets' 16-joint order; invalid SH entries are NaN (S11 Directions, camera 54138969)."""
    z = load_h36m_arrays(Path(path))
    known = [int(s) for s in z["cam_subjects"]]
    out = []
    for s in subjects:
        si = known.index(s)
        frames = np.flatnonzero(z["subject"] == s)
        sh = z["pose2d_sh"][frames][:, :, list(FROM_MPII)].astype(np.float64)  # (F, 4, 16, 2)
        sh[~z["sh_valid"][frames]] = np.nan
        cams = [Camera(*(z[f"cam_{a}"][si, ci] for a in "RTfckp")) for ci in range(z["cam_R"].shape[1])]
        out.append({"subject": s, "cameras": cams, "sh": sh.transpose(0, 2, 1, 3),
                    "world": z["pose3d_world"][frames][:, list(FROM_H36M17)].astype(np.float64)})
    return out


def stats(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "p90": float("nan")}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "p90": float(np.percentile(v, 90))}


def triangulate_all(data: list[dict], threshold: float, lam: float, verbose: bool = True) -> dict:
    """Both triangulations of every subject, pooled over subjects: points, inliers, scores, labels, ground truth."""
    parts: dict[str, list] = {}
    counts = {"dlt_skipped": 0, "ransac_skipped_views": 0, "ransac_skipped_consensus": 0}
    for subject in data:
        cams, sh = subject["cameras"], subject["sh"]
        dlt = triangulate_dlt(sh, cams)
        result = bootstrap(sh, cams, confidence=None, min_confidence=lam, threshold=threshold)
        tri = result.triangulation
        counts["dlt_skipped"] += dlt.skipped
        counts["ransac_skipped_views"] += tri.skipped_views
        counts["ransac_skipped_consensus"] += tri.skipped_consensus
        for key, value in (("sh", sh), ("gt2d", project_points(subject["world"], cams)), ("world", subject["world"]),
                           ("dlt", dlt.points), ("ransac", tri.points), ("inliers", tri.inliers),
                           ("scores", result.scores), ("tiebreak", mean_inlier_error(tri)),
                           ("dlt_labels", project_points(dlt.points, cams)),
                           ("labels", project_points(tri.points, cams))):
            parts.setdefault(key, []).append(value)
        if verbose:
            print(f"S{subject['subject']}: {len(sh)} frames; DLT: {dlt.summary()}; RANSAC: {result.summary()}")
    d = {k: np.concatenate(v) for k, v in parts.items()}
    d["counts"] = counts
    return d


def sweep(data: list[dict], thresholds: list[float], lam: float) -> list[dict]:
    """RANSAC at other inlier thresholds: MPJPE and label error over all frames, and the inlier fraction."""
    rows = []
    for threshold in thresholds:
        d = triangulate_all(data, threshold, lam, verbose=False)
        detected = np.isfinite(d["sh"]).all(axis=-1)
        rows.append({"threshold": threshold, "mpjpe_mm": stats(np.linalg.norm(d["ransac"] - d["world"], axis=-1)),
                     "label_px": stats(np.linalg.norm(d["labels"] - d["gt2d"], axis=-1)),
                     "inlier_fraction": float(d["inliers"].sum() / detected.sum()),
                     "skipped": d["counts"]["ransac_skipped_consensus"] + d["counts"]["ransac_skipped_views"],
                     "frames_all_inliers": int((d["scores"] == d["inliers"][0].size).sum())})
    return rows


def run(args: argparse.Namespace) -> dict:
    subjects = [int(s.strip().lstrip("Ss")) for s in args.subjects.split(",")]
    start_cpu, start = resource.getrusage(resource.RUSAGE_SELF).ru_utime, time.perf_counter()
    data = load(args.data, subjects)
    d = triangulate_all(data, args.threshold, args.lam)
    counts = d.pop("counts")
    frames = len(d["scores"])
    top_n = min(args.top_n, frames)
    order = select_frames(d["scores"], frames, d["tiebreak"])  # every frame with an inlier, best first
    top = order[:top_n]
    top_score_only = select_frames(d["scores"], top_n)  # ties in frame order: what the score alone picks

    mm_dlt = np.linalg.norm(d["dlt"] - d["world"], axis=-1)  # (F, 16)
    mm_ransac = np.linalg.norm(d["ransac"] - d["world"], axis=-1)
    px_sh = np.linalg.norm(d["sh"] - d["gt2d"], axis=-1)  # (F, 16, 4)
    px_dlt = np.linalg.norm(d["dlt_labels"] - d["gt2d"], axis=-1)
    px_label = np.linalg.norm(d["labels"] - d["gt2d"], axis=-1)
    detected = np.isfinite(d["sh"]).all(axis=-1)
    outlier = detected & ~d["inliers"] & np.isfinite(d["ransac"]).all(axis=-1)[..., None]

    mpjpe = {"dlt_all_views": stats(mm_dlt), "ransac_pairs": stats(mm_ransac),
             "dlt_all_views_top_n": stats(mm_dlt[top]), "ransac_pairs_top_n": stats(mm_ransac[top])}
    labels = {"sh_detections": stats(px_sh), "dlt_labels": stats(px_dlt), "ransac_labels_all": stats(px_label),
              "ransac_labels_top_n": stats(px_label[top]), "sh_detections_top_n": stats(px_sh[top]),
              "ransac_labels_top_n_score_only": stats(px_label[top_score_only])}
    cumulative = []
    for n in sorted({min(n, len(order)) for n in (1000, 2500, 5000, 10000, 15000, 20000, len(order))}):
        idx = order[:n]
        new = (outlier[idx] | ~detected[idx]) & np.isfinite(d["labels"][idx]).all(axis=-1)
        cumulative.append({"top_n": n, "score_min": float(d["scores"][idx].min()), "label_px": stats(px_label[idx]),
                           "new_view_labels": int(new.sum()), "new_label_px": stats(px_label[idx][new]),
                           "sh_px_where_new": stats(px_sh[idx][new])})
    deciles = []
    for q, idx in enumerate(np.array_split(order, 10)):
        s = d["scores"][idx]
        deciles.append({"decile": q + 1, "frames": len(idx), "score_min": float(s.min()), "score_max": float(s.max()),
                        "label_px": stats(px_label[idx]), "sh_px": stats(px_sh[idx]),
                        "mpjpe_mm": stats(mm_ransac[idx])})
    by_score = []
    for lo, hi in ((64, 64), (63, 63), (62, 62), (60, 61), (56, 59), (48, 55), (0, 47)):
        idx = np.flatnonzero((d["scores"] >= lo) & (d["scores"] <= hi))
        by_score.append({"inliers": f"{lo}" if lo == hi else f"{lo}-{hi}", "frames": len(idx),
                         "label_px": stats(px_label[idx]), "mpjpe_mm": stats(mm_ransac[idx])})
    labelled_top = np.isfinite(d["labels"][top]).all(axis=-1)
    outlier_top, missing_top = outlier[top], ~detected[top] & labelled_top
    round_ = {"frames": frames, "frames_with_inliers": int(len(order)), "frames_selected": int(top_n),
              "score_of_last_selected": float(d["scores"][top[-1]]),
              "keypoints_selected": int(top_n * len(JOINTS)),
              "keypoints_labelled": int(labelled_top.any(axis=-1).sum()),
              "view_labels": int(labelled_top.sum()), "view_labels_detection_inlier": int(d["inliers"][top].sum()),
              "view_labels_detection_outlier": int(outlier_top.sum()),
              "view_labels_detection_missing": int(missing_top.sum()),
              "label_px_all": stats(px_label[top]), "label_px_inlier_views": stats(px_label[top][d["inliers"][top]]),
              "label_px_outlier_views": stats(px_label[top][outlier_top]),
              "sh_px_outlier_views": stats(px_sh[top][outlier_top]),
              "label_px_missing_views": stats(px_label[top][missing_top]),
              "label_px_all_frames_outlier_views": stats(px_label[outlier]),
              "sh_px_all_frames_outlier_views": stats(px_sh[outlier])}
    per_joint = [{"joint": name, "sh_px": float(np.nanmedian(px_sh[:, j])),
                  "label_px": float(np.nanmedian(px_label[:, j])), "dlt_mm": float(np.nanmedian(mm_dlt[:, j])),
                  "ransac_mm": float(np.nanmedian(mm_ransac[:, j])), "outlier_views": int(outlier[:, j].sum()),
                  "outlier_label_px": stats(px_label[:, j][outlier[:, j]])["median"],
                  "outlier_sh_px": stats(px_sh[:, j][outlier[:, j]])["median"]}
                 for j, name in enumerate(JOINTS)]
    cpu = cpu_info()
    return {"command": vars(args), "subjects": subjects, "counts": counts,
            "score": "inlier count (SH gives no confidence); ties by mean inlier reprojection error",
            "lambda_note": "ignored: no confidences", "points": int(frames * len(JOINTS)),
            "inlier_fraction": float(d["inliers"].sum() / detected.sum()),
            "mpjpe_mm": mpjpe, "label_px": labels, "deciles": deciles, "cumulative": cumulative,
            "sweep": sweep(data, [float(t) for t in args.sweep.split(",") if t.strip()], args.lam),
            "by_score": by_score, "round": round_,
            "per_joint": per_joint,
            "machine": {"cpu": cpu.name, "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "numpy": np.__version__, "torch": torch.__version__},
            "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime - start_cpu, 1),
            "wall_s": round(time.perf_counter() - start, 1)}


def _row(name: str, s: dict) -> str:
    return f"| {name} | {s['mean']:.1f} | {s['median']:.1f} | {s['p90']:.1f} | {s['n']:,} |"


def markdown(r: dict) -> str:
    c, rd = r["command"], r["round"]
    top = f"top {rd['frames_selected']:,}"
    lines = [f"Human3.6M S{', S'.join(map(str, r['subjects']))}, 4 views, SH detections; RANSAC threshold "
             f"{c['threshold']:g} px; score: {r['score']}; λ {r['lambda_note']}.", "",
             "**MPJPE of triangulated points vs world ground truth (mm, 16 joints)**", "",
             "| method | mean | median | p90 | points |", "|---|---|---|---|---|"]
    m = r["mpjpe_mm"]
    lines += [_row("DLT, all views, all frames", m["dlt_all_views"]), _row("RANSAC over pairs, all frames",
              m["ransac_pairs"]), _row(f"DLT, all views, {top} frames", m["dlt_all_views_top_n"]),
              _row(f"RANSAC over pairs, {top} frames", m["ransac_pairs_top_n"])]
    lines += ["", "**2D error vs ground truth projected into each view (px)**", "",
              "| labels | mean | median | p90 | view-points |", "|---|---|---|---|---|"]
    p = r["label_px"]
    lines += [_row("SH detections themselves, all frames", p["sh_detections"]),
              _row("DLT reprojected, all frames", p["dlt_labels"]),
              _row("RANSAC reprojected, all frames", p["ransac_labels_all"]),
              _row(f"SH detections, {top} frames", p["sh_detections_top_n"]),
              _row(f"RANSAC reprojected, {top} frames", p["ransac_labels_top_n"]),
              _row(f"RANSAC reprojected, {top} by inlier count alone (ties in frame order)",
                   p["ransac_labels_top_n_score_only"])]
    lines += ["", "**By score rank (deciles of frames, best first)**", "",
              "| decile | frames | inlier count | label px mean | median | p90 | SH px median | MPJPE mm median |",
              "|---|---|---|---|---|---|---|---|"]
    for q in r["deciles"]:
        lines.append(f"| {q['decile']} | {q['frames']:,} | {q['score_min']:.0f}–{q['score_max']:.0f} | "
                     f"{q['label_px']['mean']:.1f} | {q['label_px']['median']:.1f} | {q['label_px']['p90']:.1f} | "
                     f"{q['sh_px']['median']:.1f} | {q['mpjpe_mm']['median']:.1f} |")
    lines += ["", "**By score value (inlier detections of 64)**", "",
              "| inliers | frames | label px mean | median | p90 | MPJPE mm median |", "|---|---|---|---|---|---|"]
    for b in r["by_score"]:
        if b["frames"]:
            lines.append(f"| {b['inliers']} | {b['frames']:,} | {b['label_px']['mean']:.1f} | "
                         f"{b['label_px']['median']:.1f} | {b['label_px']['p90']:.1f} | "
                         f"{b['mpjpe_mm']['median']:.1f} |")
    lines += ["", f"**One bootstrapping round ({top} frames by score)**", "", "| quantity | value |", "|---|---|",
              f"| frames (all / with an inlier / selected) | {rd['frames']:,} / {rd['frames_with_inliers']:,} / "
              f"{rd['frames_selected']:,} |",
              f"| score of the last selected frame | {rd['score_of_last_selected']:.0f} of 64 |",
              f"| keypoints labelled / selected | {rd['keypoints_labelled']:,} / {rd['keypoints_selected']:,} |",
              f"| view labels (detection inlier / outlier / missing) | {rd['view_labels']:,} "
              f"({rd['view_labels_detection_inlier']:,} / {rd['view_labels_detection_outlier']:,} / "
              f"{rd['view_labels_detection_missing']:,}) |",
              f"| label error, all views: mean / median / p90 px | {_mmp(rd['label_px_all'])} |",
              f"| label error, views whose detection was an inlier | {_mmp(rd['label_px_inlier_views'])} |",
              f"| label error, views whose detection was an outlier | {_mmp(rd['label_px_outlier_views'])} |",
              f"| SH detection error in those outlier views | {_mmp(rd['sh_px_outlier_views'])} |",
              f"| all frames, outlier views: label / SH detection | {_mmp(rd['label_px_all_frames_outlier_views'])} "
              f"/ {_mmp(rd['sh_px_all_frames_outlier_views'])} |"]
    lines += ["", "**Top-N by rank: label error, and the new labels (views whose detection was an outlier or "
              "missing)**", "", "| top N | lowest score | label px mean / median / p90 | new view labels | "
              "new labels px mean / median / p90 | SH px in those views |", "|---|---|---|---|---|---|"]
    lines += [f"| {c_['top_n']:,} | {c_['score_min']:.0f} | {_mmp(c_['label_px'], n=False)} | "
              f"{c_['new_view_labels']:,} | {_mmp(c_['new_label_px'], n=False)} | "
              f"{_mmp(c_['sh_px_where_new'], n=False)} |" for c_ in r["cumulative"]]
    if r["sweep"]:
        lines += ["", "**RANSAC inlier threshold (all frames)**", "", "| threshold px | MPJPE mm mean / median | "
                  "label px mean / median | inlier % | frames with 64 inliers | skipped points |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {w['threshold']:g} | {w['mpjpe_mm']['mean']:.1f} / {w['mpjpe_mm']['median']:.1f} | "
                  f"{w['label_px']['mean']:.1f} / {w['label_px']['median']:.1f} | {100 * w['inlier_fraction']:.1f} | "
                  f"{w['frames_all_inliers']:,} | {w['skipped']} |" for w in r["sweep"]]
    lines += ["", "**Per joint, all frames (medians)**", "", "| joint | SH px | label px | DLT mm | RANSAC mm | "
              "outlier views | their label px | their SH px |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {j['joint']} | {j['sh_px']:.1f} | {j['label_px']:.1f} | {j['dlt_mm']:.1f} | {j['ransac_mm']:.1f} | "
              f"{j['outlier_views']:,} | {j['outlier_label_px']:.1f} | {j['outlier_sh_px']:.1f} |"
              for j in r["per_joint"]]
    lines += ["", f"Skipped points: DLT {r['counts']['dlt_skipped']}, RANSAC {r['counts']['ransac_skipped_views']} "
              f"(< 2 detections) + {r['counts']['ransac_skipped_consensus']} (no 2 views agree); inlier fraction of "
              f"detections {100 * r['inlier_fraction']:.1f} %. Machine: {r['machine']['cpu']}, "
              f"{r['machine']['threads']} thread; {r['cpu_s']:.0f} CPU-s, {r['wall_s']:.0f} s wall."]
    return "\n".join(lines)


def _mmp(s: dict, n: bool = True) -> str:
    text = f"{s['mean']:.1f} / {s['median']:.1f} / {s['p90']:.1f}"
    return f"{text} (n {s['n']:,})" if n else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Human3.6M npz (h36m_sh_10hz.npz, layout of h36m.md)")
    parser.add_argument("--subjects", default="S9,S11", help="comma-separated subjects, e.g. S9,S11")
    parser.add_argument("--threshold", type=float, default=20.0, help="RANSAC inlier threshold, px")
    parser.add_argument("--top-n", type=int, default=5000, help="frames kept by score")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.2,
                        help="confidence threshold λ; only meaningful with confidences, which SH does not give")
    parser.add_argument("--sweep", default="", help="other RANSAC thresholds to compare, px, e.g. 10,15,30,40")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="json to write (keep it outside the repository)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
