"""Human3.6M's lifting metrics: MPJPE under protocol 1 (root-aligned) and protocol 2 (Procrustes-aligned),
3DPCK and its AUC, and the left/right bone-length symmetry error; per action and averaged over actions.

Beside them N-MPJPE (Rhodin et al., CVPR 2018): protocol 1 after the one scale per pose that best fits the
prediction to the ground truth, which weakly supervised lifters often report; it shows how much of a protocol-1
error is the pose's size alone.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import root_centred
from .skeleton import symmetry_error

PCK_THRESHOLD = 150.0  # mm, as MPI-INF-3DHP's 3DPCK
AUC_THRESHOLDS = torch.linspace(0, 150, 31)


def procrustes_aligned(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``pred`` (B, J, 3) moved onto ``truth`` by the similarity (scale, rotation without reflection, translation)
    that minimises the squared error: protocol 2's alignment."""
    mu_p, mu_t = pred.mean(1, keepdim=True), truth.mean(1, keepdim=True)
    p, t = pred - mu_p, truth - mu_t
    u, s, vh = torch.linalg.svd(p.transpose(1, 2) @ t)
    d = torch.sign(torch.linalg.det(u @ vh))  # -1: the best fit is a reflection; flip the weakest axis instead
    fix = torch.ones_like(s)
    fix[:, -1] = d
    rotation = u @ torch.diag_embed(fix) @ vh
    scale = (s * fix).sum(1) / p.pow(2).sum((1, 2)).clamp_min(1e-12)
    return scale[:, None, None] * p @ rotation + mu_t


def joint_errors(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per pose and joint, the errors (mm) under protocol 1 (both root-centred, no scaling), N-MPJPE (protocol 1
    after the best scale per pose) and protocol 2."""
    centred, target = root_centred(pred), root_centred(truth)
    p1 = (centred - target).norm(dim=-1)
    scale = (centred * target).sum((1, 2)) / centred.pow(2).sum((1, 2)).clamp_min(1e-12)
    n_p1 = (scale[:, None, None] * centred - target).norm(dim=-1)
    p2 = (procrustes_aligned(pred, truth) - truth).norm(dim=-1)
    return {"p1": p1, "n_p1": n_p1, "p2": p2}


def lifting_metrics(pred: torch.Tensor, truth: torch.Tensor, action: np.ndarray,
                    action_names: tuple[str, ...]) -> dict[str, float]:
    """MPJPE P1/P2 and N-MPJPE (mm) averaged over actions (the papers' "Avg" column), 3DPCK@150 mm and AUC (protocol 1),
    the predicted poses' symmetry error (mm) beside the ground truth's, and per action P1, P2 and N-MPJPE."""
    errors = joint_errors(pred.double(), truth.double())
    action = torch.as_tensor(action, dtype=torch.long)
    out: dict[str, float] = {}
    per_action: dict[str, list[float]] = {"p1": [], "n_p1": [], "p2": []}
    for a, name in enumerate(action_names):
        rows = action == a
        if rows.any():
            for key in per_action:
                value = float(errors[key][rows].mean())
                per_action[key].append(value)
                out[f"{key}_{name}"] = round(value, 2)
    out["p1_mm"] = round(float(np.mean(per_action["p1"])), 2)
    out["p2_mm"] = round(float(np.mean(per_action["p2"])), 2)
    out["n_p1_mm"] = round(float(np.mean(per_action["n_p1"])), 2)
    p1 = errors["p1"]
    out["pck3d"] = round(float((p1 <= PCK_THRESHOLD).double().mean()) * 100, 2)
    out["auc"] = round(float(torch.stack([(p1 <= t).double().mean() for t in AUC_THRESHOLDS]).mean()) * 100, 2)
    out["symmetry_mm"] = round(float(symmetry_error(pred.double()).mean()), 2)
    out["symmetry_truth_mm"] = round(float(symmetry_error(truth.double()).mean()), 2)
    out["poses"] = len(pred)
    return out
