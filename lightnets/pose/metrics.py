"""Keypoint metrics: PCK relative to the torso (the LSP/CPM measure), its curve over thresholds and the curve's
area, and the mean pixel error.

    torso = torso_size(target, visible)                         # (N,) px, NaN where a torso joint is unlabelled
    per_joint = pck_at(pred, target, visible, torso, 0.2)       # (K,) PCK@0.2 of each joint
    report = evaluate_pck(pred, target, visible)                # the whole summary, with what was left out

A joint counts when it is labelled and its record has a torso size: a record whose left shoulder or right hip is
unlabelled (LSPet has such, LSP's test set does not) has no reference length and is left out of PCK (counted in
``PCKReport.skipped_records``) rather than given a borrowed one. A prediction that is not a finite number is a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_output
from .._plot import headless_pyplot
from ..errors import LightnetsError
from .keypoints import LSP_TORSO

PCK_THRESHOLDS = np.linspace(0.0, 0.5, 51)  # 0 to 0.5 of the torso size in steps of 0.01


def torso_size(keypoints: np.ndarray, visible: np.ndarray, joints: tuple[int, int] = LSP_TORSO) -> np.ndarray:
    """``(N,)`` distance between the two torso ``joints`` (LSP: left shoulder to right hip, see ``LSP_TORSO``);
    NaN where either is unlabelled or they coincide, so such a record cannot be scored with a made-up size."""
    keypoints, visible = np.asarray(keypoints, dtype=np.float64), np.asarray(visible, dtype=bool)
    a, b = joints
    size = np.linalg.norm(keypoints[..., a, :] - keypoints[..., b, :], axis=-1)
    return np.where(visible[..., a] & visible[..., b] & (size > 0), size, np.nan)


def _checked(pred: np.ndarray, target: np.ndarray, visible: np.ndarray, torso: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    if target.ndim != 3 or target.shape[-1] != 2 or pred.shape != target.shape or visible.shape != target.shape[:2]:
        raise LightnetsError(f"keypoints must be pred and target (N, K, 2) with visible (N, K), got pred "
                             f"{pred.shape}, target {target.shape}, visible {visible.shape}")
    if torso is not None:
        torso = np.asarray(torso, dtype=np.float64)
        if torso.shape != target.shape[:1]:
            raise LightnetsError(f"torso must be (N,) = ({target.shape[0]},), got {torso.shape}")
    return pred, target, visible, torso


def _thresholds(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if values.ndim != 1 or not len(values) or not (np.isfinite(values) & (values >= 0)).all():
        raise LightnetsError(f"PCK thresholds must be numbers >= 0, got {thresholds!r}")
    return values


def _hits(pred: np.ndarray, target: np.ndarray, visible: np.ndarray, torso: np.ndarray,
          thresholds: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hits (T, N, K), scored (N, K))``: within ``threshold * torso`` (inclusive, as CPM's benchmark), and the
    joints that count (labelled, in a record with a finite positive torso size)."""
    pred, target, visible, torso = _checked(pred, target, visible, torso)
    scored = visible & (np.isfinite(torso) & (torso > 0))[:, None]
    distance = np.linalg.norm(pred - target, axis=-1)
    limit = _thresholds(thresholds)[:, None, None] * torso[None, :, None]
    return (distance[None] <= limit) & scored[None], scored


def pck(pred: np.ndarray, target: np.ndarray, visible: np.ndarray, torso: np.ndarray,
        thresholds: Sequence[float] | np.ndarray = (0.2,)) -> np.ndarray:
    """``(T, K)`` fraction of each joint's scored instances predicted within ``threshold * torso`` px; NaN for a
    joint never scored (no labelled instance), so an absent joint is not reported as a perfect or a failed one."""
    hits, scored = _hits(pred, target, visible, torso, thresholds)
    count = scored.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits.sum(axis=1) / count, np.nan)


def pck_at(pred: np.ndarray, target: np.ndarray, visible: np.ndarray, torso: np.ndarray,
           threshold: float = 0.2) -> np.ndarray:
    """``(K,)`` PCK of each joint at one threshold; 0.2 is the figure the CPM paper reports on LSP."""
    return pck(pred, target, visible, torso, (threshold,))[0]


def pck_curve(pred: np.ndarray, target: np.ndarray, visible: np.ndarray, torso: np.ndarray,
              thresholds: Sequence[float] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, values)``: PCK of all joints pooled (hits over scored joints, as CPM's benchmark totals them)
    at each threshold, by default 0 to 0.5 in steps of 0.01. NaN when nothing is scored."""
    values = _thresholds(PCK_THRESHOLDS if thresholds is None else thresholds)
    hits, scored = _hits(pred, target, visible, torso, values)
    total = int(scored.sum())
    return values, hits.sum(axis=(1, 2)) / total if total else np.full(len(values), np.nan)


def auc(thresholds: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """Area under a PCK curve by the trapezoid rule, divided by the threshold range so it lies in 0..1 (1: every
    joint hit even at the smallest threshold)."""
    t, v = np.asarray(thresholds, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape or len(t) < 2 or not (np.diff(t) > 0).all():
        raise LightnetsError(f"auc needs at least 2 increasing thresholds and one value each, got thresholds "
                             f"{t.shape} and values {v.shape}")
    return float(((v[1:] + v[:-1]) / 2 * np.diff(t)).sum() / (t[-1] - t[0]))


def mean_pixel_error(pred: np.ndarray, target: np.ndarray, visible: np.ndarray) -> float:
    """Mean distance in pixels between predicted and labelled joints (unlabelled ones left out); NaN if none."""
    pred, target, visible, _ = _checked(pred, target, visible)
    distance = np.linalg.norm(pred - target, axis=-1)[visible]
    return float(distance.mean()) if len(distance) else float("nan")


@dataclass
class PCKReport:
    """PCK of one prediction set: per joint and pooled at each threshold, the curve's area, the scored count per
    joint, and how many records had no torso size and were left out."""

    thresholds: np.ndarray  # (T,)
    per_joint: np.ndarray  # (T, K)
    overall: np.ndarray  # (T,)
    auc: float
    scored: np.ndarray  # (K,) labelled joints that counted
    skipped_records: int  # records without a torso size (a torso joint unlabelled)
    mean_pixel_error: float

    def at(self, threshold: float) -> float:
        """The pooled PCK at one of the report's thresholds (e.g. 0.2)."""
        match = np.flatnonzero(np.isclose(self.thresholds, threshold))
        if not len(match):
            raise LightnetsError(f"threshold {threshold} is not among the report's {len(self.thresholds)} "
                                 f"({self.thresholds[0]:g} to {self.thresholds[-1]:g})")
        return float(self.overall[match[0]])


def evaluate_pck(pred: np.ndarray, target: np.ndarray, visible: np.ndarray,
                 thresholds: Sequence[float] | np.ndarray | None = None,
                 torso_joints: tuple[int, int] = LSP_TORSO) -> PCKReport:
    """Every PCK figure of ``pred`` against ``target`` in one call, the torso taken from the targets."""
    torso = torso_size(target, visible, torso_joints)
    values, overall = pck_curve(pred, target, visible, torso, thresholds)
    scored = np.asarray(visible, dtype=bool) & np.isfinite(torso)[:, None]
    return PCKReport(values, pck(pred, target, visible, torso, values), overall,
                     auc(values, overall) if len(values) > 1 else float("nan"), scored.sum(axis=0),
                     int((~np.isfinite(torso)).sum()), mean_pixel_error(pred, target, visible))


def plot_pck_curve(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path | None:
    """PCK against the normalised threshold, one line per named curve with its AUC in the legend, as a png; None
    without matplotlib (plots are optional)."""
    plt = headless_pyplot()
    if plt is None:
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (thresholds, values) in curves.items():
        ax.plot(thresholds, values, label=f"{name} (AUC {auc(thresholds, values):.3f})")
    ax.set_xlabel("normalised distance (fraction of torso size)")
    ax.set_ylabel("PCK")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
