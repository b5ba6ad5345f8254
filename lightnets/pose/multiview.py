"""Multiview bootstrapping tools (Simon et al., CVPR 2017): triangulate keypoints seen by calibrated cameras,
reject the views that disagree, score frames, and reproject the 3D points as new 2D labels in every view.

    tri = triangulate_ransac(points2d, cameras, threshold=20.0)        # points2d (frames, joints, views, 2) px
    labels = project_points(tri.points, cameras)                        # (frames, joints, views, 2) px
    result = bootstrap(points2d, cameras, confidence=conf, top_n=500)   # the whole step, best frames first

A camera is either a ``lightnets.lift.Camera`` (pinhole with Human3.6M's radial + tangential distortion: pixels are
undistorted before triangulating and reprojection goes through the distortion) or a plain 3×4 projection matrix
(pixels, no distortion). Triangulation is linear DLT in world coordinates centred on the cameras and scaled to
unit size, so it is as well conditioned in millimetres as in metres.

What the caller is told, never a silent wrong label: fewer than 2 cameras, a singular camera, or shapes that do not
match raise one ``LightnetsError`` line; a keypoint with fewer than 2 usable detections, or whose views never agree
within the threshold, is NaN in ``points`` and in its labels and is counted in ``Triangulation.skipped_views`` or
``skipped_consensus``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..errors import LightnetsError
from ..lift.cameras import Camera

CameraLike = Camera | np.ndarray
CHUNK = 32768  # points per vectorised block: bounds memory (pairs × views × 4 × 4 doubles per point)


def undistort_points(camera: Camera, pixels: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Pixels (..., 2) to undistorted normalised coordinates (x/z, y/z) (..., 2): the inverse of the lens model of
    ``Camera.project`` by Newton's method, since the distortion has no closed-form inverse. The residual is computed
    through ``Camera.project`` itself, so this inverts exactly that model; points where it does not converge (far
    outside the image, past the fold of the polynomial) come back NaN rather than wrong."""
    pixels = np.asarray(pixels, dtype=np.float64)
    target = (pixels - camera.c) / camera.f
    xy = target.copy()
    k1, k2, k3 = camera.k
    p1, p2 = camera.p
    for _ in range(iterations):
        residual = _distorted(camera, xy) - target
        if not (np.abs(residual) > 1e-11).any():
            break
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        d_radial = k1 + 2 * k2 * r2 + 3 * k3 * r2**2  # d radial / d r2
        scale = radial + p1 * y + p2 * x
        j11 = scale + x * (2 * x * d_radial + p2) + 2 * p2 * x
        j12 = x * (2 * y * d_radial + p1) + 2 * p2 * y
        j21 = y * (2 * x * d_radial + p2) + 2 * p1 * x
        j22 = scale + y * (2 * y * d_radial + p1) + 2 * p1 * y
        det = j11 * j22 - j12 * j21
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = (j22 * residual[..., 0] - j12 * residual[..., 1]) / det
            dy = (j11 * residual[..., 1] - j21 * residual[..., 0]) / det
        xy = xy - np.stack([dx, dy], axis=-1)
    residual = np.abs(_distorted(camera, xy) - target).max(axis=-1)
    return np.where((residual < 1e-9)[..., None], xy, np.nan)


def _distorted(camera: Camera, xy: np.ndarray) -> np.ndarray:
    """Normalised coordinates through the lens model, computed by ``Camera.project`` on points at depth 1."""
    depth = max(1.0, float(np.abs(camera.T).max()))  # keeps the round trip through world coordinates exact
    ray = depth * np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        return (camera.project(ray @ camera.R + camera.T) - camera.c) / camera.f


@dataclass(frozen=True)
class _View:
    """One camera as triangulation sees it: the 3×4 matrix in the measurement space (normalised coordinates for a
    ``Camera``, pixels for a matrix) and how to measure and project."""

    matrix: np.ndarray
    camera: Camera | None

    def measure(self, pixels: np.ndarray) -> np.ndarray:
        return pixels if self.camera is None else undistort_points(self.camera, pixels)

    def project(self, world: np.ndarray) -> np.ndarray:
        """World points (..., 3) to pixels (..., 2); NaN for points on or behind the camera."""
        homogeneous = world @ self.matrix[:, :3].T + self.matrix[:, 3]
        depth = homogeneous[..., 2] * np.sign(np.linalg.det(self.matrix[:, :3]))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            pixels = homogeneous[..., :2] / homogeneous[..., 2:] if self.camera is None else self.camera.project(world)
        return np.where((depth > 0)[..., None], pixels, np.nan)


def _views(cameras: Sequence[CameraLike]) -> list[_View]:
    if len(cameras) < 2:
        raise LightnetsError(f"triangulation needs at least 2 cameras, got {len(cameras)}")
    views = []
    for i, cam in enumerate(cameras):
        if isinstance(cam, Camera):
            matrix = np.concatenate([cam.R, -(cam.R @ cam.T)[:, None]], axis=1)
        else:
            matrix = np.asarray(cam, dtype=np.float64)
            if matrix.shape != (3, 4) or not np.isfinite(matrix).all():
                raise LightnetsError(f"camera {i} must be a lightnets.lift.Camera or a finite 3x4 projection matrix, "
                                     f"got shape {matrix.shape}")
        singular = np.linalg.svd(matrix[:, :3], compute_uv=False)
        if singular[-1] <= 1e-12 * singular[0]:
            raise LightnetsError(f"camera {i} has a singular projection (its left 3x3 block has rank "
                                 f"{int((singular > 1e-12 * singular[0]).sum())}, a camera needs rank 3)")
        views.append(_View(matrix, cam if isinstance(cam, Camera) else None))
    return views


def _normaliser(views: list[_View]) -> np.ndarray:
    """The 4×4 map from normalised to world coordinates: centred on the camera centres, scaled to their spread."""
    centres = np.stack([-np.linalg.solve(v.matrix[:, :3], v.matrix[:, 3]) for v in views])
    centre = centres.mean(axis=0)
    spread = float(np.sqrt(((centres - centre) ** 2).sum(axis=1).mean()))
    if spread <= 1e-9 * max(1.0, float(np.abs(centre).max())):
        raise LightnetsError("all cameras share one centre, so rays cannot be intersected; triangulation needs a "
                             "baseline between cameras")
    h = np.eye(4)
    h[:3, :3] *= spread
    h[:3, 3] = centre
    return h


def _dlt_rows(views: list[_View], measured: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The DLT rows (B, V, 2, 4), each scaled to unit length (so no view dominates by its units), of measurements
    (B, V, 2) against the normalised matrices; rows of missing measurements are zero and add nothing."""
    matrices = np.stack([v.matrix @ h for v in views])  # (V, 3, 4)
    rows = measured[..., None] * matrices[None, :, 2:3, :] - matrices[None, :, :2, :]
    norm = np.linalg.norm(rows, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = rows / norm
    return np.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0)


def _solve(rows: np.ndarray, h: np.ndarray) -> np.ndarray:
    """World points (..., 3) from stacked DLT rows (..., R, 4): the null vector by SVD; NaN at infinity."""
    null = np.linalg.svd(rows)[2][..., -1, :]
    w = null[..., 3:]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(np.abs(w) > 1e-12 * np.linalg.norm(null, axis=-1, keepdims=True), null[..., :3] / w,
                              np.nan)
    return normalised @ h[:3, :3].T + h[:3, 3]


def project_points(points3d: np.ndarray, cameras: Sequence[CameraLike]) -> np.ndarray:
    """World points (..., 3) to pixels in every camera (..., V, 2), lens distortion included: the new labels of
    bootstrapping. NaN where the point is NaN (not triangulated) or on or behind a camera."""
    views = _views(cameras)
    points3d = np.asarray(points3d, dtype=np.float64)
    return np.stack([v.project(points3d) for v in views], axis=-2)


def _errors(views: list[_View], world: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Reprojection errors (B, ..., V) px of world points (B, ..., 3) against detections (B, V, 2); inf behind a
    camera, NaN where there is no detection."""
    projected = np.stack([v.project(world) for v in views], axis=-2)  # (B, ..., V, 2)
    shape = (pixels.shape[0],) + (1,) * (world.ndim - 2) + pixels.shape[1:]
    error = np.linalg.norm(projected - pixels.reshape(shape), axis=-1)
    missing = ~np.isfinite(pixels.reshape(shape)).all(axis=-1)
    return np.where(missing, np.nan, np.where(np.isfinite(error), error, np.inf))


@dataclass
class Triangulation:
    """Triangulated points (..., 3) (NaN where skipped), which detections were used (``inliers`` (..., V)), each
    detection's reprojection error in px (``errors`` (..., V), NaN where there was none), and the counts of points
    skipped for fewer than 2 usable detections and for views that do not agree on a finite point (for RANSAC: no
    two views within ``threshold`` px). Every NaN point is in one of the two counts."""

    points: np.ndarray
    inliers: np.ndarray
    errors: np.ndarray
    skipped_views: int
    skipped_consensus: int = 0
    threshold: float | None = None

    @property
    def skipped(self) -> int:
        return self.skipped_views + self.skipped_consensus

    def summary(self) -> str:
        total = int(np.prod(self.points.shape[:-1]))
        text = f"{total - self.skipped} of {total} points triangulated; {self.skipped_views} skipped (< 2 detections)"
        if self.threshold is not None:
            text += f", {self.skipped_consensus} skipped (no 2 views within {self.threshold:g} px)"
        elif self.skipped_consensus:
            text += f", {self.skipped_consensus} skipped (rays meet at infinity)"
        return text


def _inputs(points2d: np.ndarray, cameras: Sequence[CameraLike], valid: np.ndarray | None
            ) -> tuple[list[_View], np.ndarray, np.ndarray]:
    """The views, the detections flattened to (B, V, 2) with unusable ones set to NaN, and the leading shape."""
    views = _views(cameras)
    pixels = np.asarray(points2d, dtype=np.float64)
    if pixels.ndim < 2 or pixels.shape[-2:] != (len(views), 2):
        raise LightnetsError(f"detections must have shape (..., {len(views)} views, 2) for {len(views)} cameras, "
                             f"got {pixels.shape}")
    usable = np.isfinite(pixels).all(axis=-1)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != pixels.shape[:-1]:
            raise LightnetsError(f"valid must have shape {pixels.shape[:-1]}, got {valid.shape}")
        usable &= valid
    pixels = np.where(usable[..., None], pixels, np.nan)
    return views, pixels.reshape(-1, len(views), 2), np.array(pixels.shape[:-2], dtype=np.int64)


def triangulate_dlt(points2d: np.ndarray, cameras: Sequence[CameraLike], valid: np.ndarray | None = None
                    ) -> Triangulation:
    """Plain linear DLT from every usable detection (finite, and ``valid`` where given) of each point; detections
    (..., V, 2) px. The baseline that RANSAC must beat: one bad view pulls the point away."""
    views, pixels, lead = _inputs(points2d, cameras, valid)
    h = _normaliser(views)
    points = np.full((len(pixels), 3), np.nan)
    errors = np.full((len(pixels), len(views)), np.nan)
    used = np.isfinite(pixels).all(axis=-1)
    for s in range(0, len(pixels), CHUNK):
        block = pixels[s:s + CHUNK]
        measured = np.stack([v.measure(block[:, i]) for i, v in enumerate(views)], axis=1)
        used[s:s + CHUNK] &= np.isfinite(measured).all(axis=-1)
        rows = _dlt_rows(views, measured, h)
        enough = used[s:s + CHUNK].sum(axis=1) >= 2
        solved = _solve(rows.reshape(len(block), -1, 4), h)
        points[s:s + CHUNK] = np.where(enough[:, None], solved, np.nan)
        errors[s:s + CHUNK] = _errors(views, points[s:s + CHUNK], block)
    few = used.sum(axis=1) < 2
    degenerate = ~few & ~np.isfinite(points).all(axis=1)
    used &= ~(few | degenerate)[:, None]
    shape = tuple(lead)
    return Triangulation(points.reshape(*shape, 3), used.reshape(*shape, len(views)),
                         errors.reshape(*shape, len(views)), int(few.sum()), int(degenerate.sum()))


def triangulate_ransac(points2d: np.ndarray, cameras: Sequence[CameraLike], threshold: float = 20.0,
                       valid: np.ndarray | None = None, confidence: np.ndarray | None = None) -> Triangulation:
    """Robust triangulation: every pair of usable views proposes a point (DLT), the detections it reprojects to
    within ``threshold`` px are its inliers, the proposal with the most support wins (summed ``confidence`` of the
    inliers where given, else their count; ties go to the smaller summed error) and the point is refit by DLT on
    its inliers. With a handful of views every pair is tried, so this is exhaustive rather than random sampling.
    ``errors`` are the refit point's reprojection errors; ``inliers`` the detections it was refit on."""
    if not threshold > 0:
        raise LightnetsError(f"the inlier threshold must be a positive number of pixels, got {threshold}")
    views, pixels, lead = _inputs(points2d, cameras, valid)
    weight = np.ones(pixels.shape[:2])
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != tuple(lead) + (len(views),):
            raise LightnetsError(f"confidence must have shape {tuple(lead) + (len(views),)}, got {confidence.shape}")
        weight = np.nan_to_num(confidence.reshape(-1, len(views)), nan=0.0)
    h = _normaliser(views)
    pairs = np.array(list(combinations(range(len(views)), 2)))
    points = np.full((len(pixels), 3), np.nan)
    errors = np.full((len(pixels), len(views)), np.nan)
    inliers = np.zeros((len(pixels), len(views)), bool)
    few = np.zeros(len(pixels), bool)
    for s in range(0, len(pixels), CHUNK):
        block, w = pixels[s:s + CHUNK], weight[s:s + CHUNK]
        measured = np.stack([v.measure(block[:, i]) for i, v in enumerate(views)], axis=1)
        block = np.where(np.isfinite(measured).all(axis=-1, keepdims=True), block, np.nan)
        usable = np.isfinite(block).all(axis=-1)
        rows = _dlt_rows(views, measured, h)  # (B, V, 2, 4)
        hypotheses = _solve(rows[:, pairs].reshape(len(block), len(pairs), 4, 4), h)  # (B, P, 3)
        pair_ok = usable[:, pairs].all(axis=-1)
        err = _errors(views, hypotheses, block)  # (B, P, V)
        agree = (err < threshold) & usable[:, None, :] & pair_ok[..., None]
        support = np.where(pair_ok, (agree * w[:, None, :]).sum(axis=-1), -1.0)
        err_sum = np.where(agree, err, 0.0).sum(axis=-1)
        best = support.max(axis=1, keepdims=True)
        choice = np.where(support >= best - 1e-9 * np.abs(best), err_sum, np.inf).argmin(axis=1)
        chosen = agree[np.arange(len(block)), choice]  # (B, V)
        few[s:s + CHUNK] = usable.sum(axis=1) < 2
        chosen &= (chosen.sum(axis=1) >= 2)[:, None]
        refit = _solve((rows * chosen[..., None, None]).reshape(len(block), -1, 4), h)
        refit[~chosen.any(axis=1)] = np.nan
        chosen &= np.isfinite(refit).all(axis=1, keepdims=True)
        points[s:s + CHUNK] = refit
        inliers[s:s + CHUNK] = chosen
        errors[s:s + CHUNK] = _errors(views, refit, block)
    no_consensus = ~few & ~inliers.any(axis=1)
    shape = tuple(lead)
    return Triangulation(points.reshape(*shape, 3), inliers.reshape(*shape, len(views)),
                         errors.reshape(*shape, len(views)), int(few.sum()), int(no_consensus.sum()), threshold)


def frame_scores(tri: Triangulation, confidence: np.ndarray | None = None) -> np.ndarray:
    """Each frame's score (axis 0 of the points): the summed confidence of its inlier detections, as Simon et al.
    rank frames. A detector that gives no confidence (``confidence=None``) scores each inlier 1, so the inlier count
    stands in: it rewards frames where many views agree on many keypoints."""
    weight = tri.inliers.astype(np.float64)
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != tri.inliers.shape:
            raise LightnetsError(f"confidence must have shape {tri.inliers.shape}, got {confidence.shape}")
        weight = weight * np.nan_to_num(confidence, nan=0.0)
    weight = weight.reshape(len(weight), -1) if weight.ndim > 1 else weight[None]
    return weight.sum(axis=1)


def mean_inlier_error(tri: Triangulation) -> np.ndarray:
    """Each frame's mean reprojection error over its inlier detections (px; inf for a frame with none): the
    tie-break among frames of equal score, which the inlier count produces often."""
    err = np.where(tri.inliers, tri.errors, 0.0).reshape(len(tri.inliers), -1)
    count = tri.inliers.reshape(len(tri.inliers), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, err.sum(axis=1) / count, np.inf)


def select_frames(scores: np.ndarray, top_n: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``top_n`` best frames, best first: highest score, then lowest ``tiebreak`` (e.g.
    ``mean_inlier_error``), then earliest frame. Frames of score 0 (no inliers) are never selected."""
    scores = np.asarray(scores, dtype=np.float64)
    if isinstance(top_n, bool) or int(top_n) != top_n or top_n < 1:
        raise LightnetsError(f"top_n must be a positive whole number of frames, got {top_n}")
    secondary = np.zeros_like(scores) if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    if secondary.shape != scores.shape:
        raise LightnetsError(f"tiebreak must have the shape of scores {scores.shape}, got {secondary.shape}")
    order = np.lexsort((np.arange(len(scores)), secondary, -scores))
    order = order[scores[order] > 0]
    return order[:int(top_n)]


@dataclass
class Bootstrap:
    """One bootstrapping step: the triangulation of every frame, the frame scores (``score_kind`` says what they
    sum), the selected frames (best first) and their new labels (frames, joints, V, 2) px, NaN where a keypoint was
    not triangulated; ``dropped_low_confidence`` counts detections under ``min_confidence``."""

    triangulation: Triangulation
    scores: np.ndarray
    score_kind: str
    frames: np.ndarray
    labels: np.ndarray
    dropped_low_confidence: int

    def summary(self) -> str:
        labelled = int(np.isfinite(self.labels).all(axis=-1).any(axis=-1).sum())
        return (f"{self.triangulation.summary()}; {self.dropped_low_confidence} detections under the confidence "
                f"threshold; {len(self.frames)} frames selected by {self.score_kind}, {labelled} keypoints labelled")


def bootstrap(points2d: np.ndarray, cameras: Sequence[CameraLike], confidence: np.ndarray | None = None,
              min_confidence: float = 0.2, threshold: float = 20.0, top_n: int | None = None) -> Bootstrap:
    """Simon et al.'s step on detections (frames, joints, V, 2) px: drop detections under ``min_confidence``
    (λ; only with confidences), triangulate each keypoint by RANSAC over view pairs, score frames, keep the
    ``top_n`` best (all frames with any inlier when None) and reproject their points into every view as labels."""
    pixels = np.asarray(points2d, dtype=np.float64)
    if pixels.ndim != 4:
        raise LightnetsError(f"bootstrap needs detections of shape (frames, joints, views, 2), got {pixels.shape}")
    valid, dropped = None, 0
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != pixels.shape[:-1]:
            raise LightnetsError(f"confidence must have shape {pixels.shape[:-1]}, got {confidence.shape}")
        valid = confidence >= min_confidence
        dropped = int((~valid & np.isfinite(pixels).all(axis=-1)).sum())
    tri = triangulate_ransac(pixels, cameras, threshold, valid=valid, confidence=confidence)
    scores = frame_scores(tri, confidence)
    frames = select_frames(scores, len(scores) if top_n is None else top_n, mean_inlier_error(tri))
    labels = project_points(tri.points[frames], cameras)
    kind = "summed inlier confidence" if confidence is not None else "inlier count (no confidences given)"
    return Bootstrap(tri, scores, kind, frames, labels, dropped)
