"""Multiview triangulation and bootstrapping on generated data only: random skeletons seen by random distorted
cameras, with pixel noise and gross outliers (Human3.6M never goes into a test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightnets.errors import LightnetsError
from lightnets.lift import Camera
from lightnets.pose import (
    bootstrap,
    frame_scores,
    mean_inlier_error,
    project_points,
    select_frames,
    triangulate_dlt,
    triangulate_ransac,
    undistort_points,
)


def random_camera(rng: np.random.Generator, yaw: float, distortion: bool = True) -> Camera:
    """A camera 4-6 m from the origin, 0.5-2 m up, looking at a point near 1 m height, with H36M-like lenses."""
    distance, height = rng.uniform(4000, 6000), rng.uniform(500, 2000)
    centre = np.array([distance * math.sin(yaw), -distance * math.cos(yaw), height])
    forward = np.array([0, 0, 1000.0]) + rng.normal(0, 100, 3) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    k = np.array([rng.uniform(-0.25, -0.15), rng.uniform(0.1, 0.25), rng.uniform(-0.01, 0.01)]) if distortion else 0
    p = rng.uniform(-2e-3, 2e-3, 2) if distortion else np.zeros(2)
    return Camera(np.stack([right, down, forward]), centre, rng.uniform(1100, 1200, 2), rng.uniform(490, 510, 2),
                  np.zeros(3) + k, p)


def rig(rng: np.random.Generator, views: int = 4) -> list[Camera]:
    return [random_camera(rng, yaw) for yaw in np.linspace(0, 2 * math.pi, views, endpoint=False) + rng.normal(0, .2)]


def skeletons(rng: np.random.Generator, frames: int, joints: int = 16) -> np.ndarray:
    """Random people: joints scattered in a 0.6 × 0.6 × 1.8 m box around a random position on the floor."""
    root = np.concatenate([rng.uniform(-800, 800, (frames, 1, 2)), np.zeros((frames, 1, 1))], axis=-1)
    return root + rng.uniform([-300, -300, 0], [300, 300, 1800], (frames, joints, 3))


def test_undistort_inverts_the_lens_model():
    rng = np.random.default_rng(0)
    cam = random_camera(rng, 0.4)
    world = skeletons(rng, 200)
    pixels = cam.project(world)
    normalised = undistort_points(cam, pixels)
    in_camera = cam.to_camera(world)
    assert np.abs(normalised - in_camera[..., :2] / in_camera[..., 2:]).max() < 1e-6
    back = np.concatenate([normalised, np.ones_like(normalised[..., :1])], axis=-1) @ cam.R + cam.T
    assert np.abs(cam.project(back) - pixels).max() < 1e-6
    assert np.abs((pixels - cam.c) / cam.f - normalised).max() > 1e-3  # the lens does distort: not a no-op


def test_dlt_recovers_exact_points_from_noise_free_views():
    rng = np.random.default_rng(1)
    cams, world = rig(rng), skeletons(rng, 50)
    pixels = project_points(world, cams)
    tri = triangulate_dlt(pixels, cams)
    assert tri.points.shape == world.shape and tri.skipped == 0 and tri.inliers.all()
    assert np.abs(tri.points - world).max() < 1e-6
    assert np.nanmax(tri.errors) < 1e-6
    matrices = [np.concatenate([np.diag([c.f[0], c.f[1], 1.0]) @ c.R, -(np.diag([c.f[0], c.f[1], 1.0]) @ c.R
                                                                        @ c.T)[:, None]], 1) for c in cams]
    pinhole = project_points(world, matrices)  # plain 3x4 matrices: pixels without a lens
    assert np.abs(triangulate_dlt(pinhole, matrices).points - world).max() < 1e-6


def noisy_with_outliers(rng, cams, world, noise=2.0, outlier_rate=0.0):
    pixels = project_points(world, cams) + rng.normal(0, noise, world.shape[:-1] + (len(cams), 2))
    outlier = rng.random(pixels.shape[:-1]) < outlier_rate
    pixels[outlier] += rng.choice([-1, 1], (outlier.sum(), 2)) * rng.uniform(80, 200, (outlier.sum(), 2))
    return pixels, outlier


def test_ransac_rejects_a_gross_outlier_view_that_dlt_does_not():
    rng = np.random.default_rng(2)
    cams, world = rig(rng), skeletons(rng, 40)
    pixels, _ = noisy_with_outliers(rng, cams, world)
    pixels[:, :, 1] += 150.0  # one view wrong everywhere by ~200 px
    dlt = triangulate_dlt(pixels, cams)
    ransac = triangulate_ransac(pixels, cams, threshold=15.0)
    dlt_mm = np.linalg.norm(dlt.points - world, axis=-1)
    ransac_mm = np.linalg.norm(ransac.points - world, axis=-1)
    assert np.median(dlt_mm) > 40.0  # the bad view pulls plain DLT away
    assert np.median(ransac_mm) < 10.0 and ransac_mm.max() < 30.0
    assert not ransac.inliers[:, :, 1].any() and ransac.inliers[:, :, [0, 2, 3]].all()
    assert ransac.skipped == 0 and np.nanmedian(ransac.errors[:, :, 1]) > 100.0


def test_ransac_refits_on_every_inlier_and_matches_dlt_without_outliers():
    rng = np.random.default_rng(3)
    cams, world = rig(rng, views=5), skeletons(rng, 20)
    pixels, _ = noisy_with_outliers(rng, cams, world, noise=1.0)
    ransac, dlt = triangulate_ransac(pixels, cams, threshold=20.0), triangulate_dlt(pixels, cams)
    assert ransac.inliers.all()
    assert np.abs(ransac.points - dlt.points).max() < 1e-6


def test_scores_and_selection_pick_the_clean_frames():
    rng = np.random.default_rng(4)
    cams, world = rig(rng), skeletons(rng, 60)
    pixels, _ = noisy_with_outliers(rng, cams, world)
    clean = np.arange(60) % 3 == 0
    dirty = np.flatnonzero(~clean)
    hit = rng.random((len(dirty), 16, 4)) < 0.4  # 40 % of the detections in dirty frames are gross outliers
    pixels[dirty] += hit[..., None] * rng.choice([-1, 1], hit.shape + (2,)) * 150.0
    tri = triangulate_ransac(pixels, cams, threshold=15.0)
    scores = frame_scores(tri)  # no confidences: the inlier count stands in
    assert (scores[clean] == 64).all() and (scores[~clean] < 64).all()
    top = select_frames(scores, clean.sum(), mean_inlier_error(tri))
    assert set(top) == set(np.flatnonzero(clean))
    # with confidences the score is their sum over inliers: low confidence on the clean frames demotes them
    confidence = np.where(clean[:, None, None], 0.3, 0.9) * np.ones(tri.inliers.shape)
    weighted = frame_scores(tri, confidence)
    assert np.allclose(weighted[clean], 64 * 0.3)
    assert not set(select_frames(weighted, 5)) & set(np.flatnonzero(clean))


def test_select_frames_orders_by_score_then_tiebreak():
    scores = np.array([3.0, 5.0, 5.0, 0.0, 4.0])
    assert select_frames(scores, 3).tolist() == [1, 2, 4]
    assert select_frames(scores, 3, np.array([0, 2.0, 1.0, 0, 0])).tolist() == [2, 1, 4]
    assert select_frames(scores, 10).tolist() == [1, 2, 4, 0]  # a frame with no inlier is never picked
    with pytest.raises(LightnetsError, match="top_n"):
        select_frames(scores, 0)


def test_reprojected_labels_match_projection_and_fill_outlier_views():
    rng = np.random.default_rng(5)
    cams, world = rig(rng), skeletons(rng, 30)
    pixels, outlier = noisy_with_outliers(rng, cams, world, noise=0.0, outlier_rate=0.15)
    result = bootstrap(pixels, cams, threshold=5.0, top_n=10)
    assert len(result.frames) == 10 and result.labels.shape == (10, 16, 4, 2)
    truth = project_points(world[result.frames], cams)
    ok = np.isfinite(result.labels).all(axis=-1)
    assert ok.mean() > 0.95
    assert np.abs(result.labels[ok] - truth[ok]).max() < 1e-5  # exact labels, even in views whose detection was bad
    assert outlier[result.frames][ok].any()
    assert np.abs(result.labels - project_points(result.triangulation.points[result.frames], cams))[ok].max() == 0
    assert "inlier count" in result.score_kind and "frames selected" in result.summary()


def test_low_confidence_detections_are_dropped_and_counted():
    rng = np.random.default_rng(6)
    cams, world = rig(rng), skeletons(rng, 8)
    pixels, _ = noisy_with_outliers(rng, cams, world, noise=0.5)
    confidence = np.full(pixels.shape[:-1], 0.9)
    confidence[:, :, 0] = 0.1  # camera 0 is never trusted
    confidence[0, 0, 1:3] = 0.05  # frame 0 joint 0 keeps only camera 3: a counted skip
    result = bootstrap(pixels, cams, confidence=confidence, min_confidence=0.2, threshold=10.0)
    tri = result.triangulation
    assert result.dropped_low_confidence == 8 * 16 + 2
    assert not tri.inliers[..., 0].any() and tri.skipped_views == 1 and np.isnan(tri.points[0, 0]).all()
    assert np.isnan(result.labels[list(result.frames).index(0), 0]).all()  # no label rather than a wrong one
    assert "summed inlier confidence" in result.score_kind


def test_fewer_than_two_views_is_a_counted_skip_never_a_label():
    rng = np.random.default_rng(7)
    cams, world = rig(rng), skeletons(rng, 5)
    pixels = project_points(world, cams)
    pixels[0, 0, 1:] = np.nan  # one view left
    pixels[1, 2, :] = np.nan  # none left
    for tri in (triangulate_dlt(pixels, cams), triangulate_ransac(pixels, cams)):
        assert tri.skipped_views == 2 and tri.skipped == 2 and not tri.inliers[0, 0].any()
        assert np.isnan(tri.points[0, 0]).all() and np.isnan(tri.points[1, 2]).all()
        assert np.isfinite(tri.points).all(axis=-1).sum() == 5 * 16 - 2
        assert np.isnan(project_points(tri.points, cams)[0, 0]).all()
        assert "2 skipped (< 2 detections)" in tri.summary()


def test_no_agreement_within_threshold_is_a_counted_skip():
    rng = np.random.default_rng(8)
    cams, world = rig(rng), skeletons(rng, 3)
    pixels = project_points(world, cams)
    pixels[0, 0] += np.array([[300.0, 0], [0, 300.0], [-300.0, 0], [0, -300.0]])  # all four views disagree
    tri = triangulate_ransac(pixels, cams, threshold=5.0)
    assert tri.skipped_consensus == 1 and tri.skipped_views == 0 and np.isnan(tri.points[0, 0]).all()
    assert np.isfinite(tri.points[1:]).all()


def test_bad_cameras_and_shapes_are_one_line_errors():
    rng = np.random.default_rng(9)
    cams, world = rig(rng), skeletons(rng, 2)
    pixels = project_points(world, cams)
    singular = np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 1]])  # rank 2 left block
    for call in (lambda: triangulate_dlt(pixels[..., :1, :], cams[:1]),
                 lambda: triangulate_dlt(pixels[..., :2, :], [cams[0], singular]),
                 lambda: triangulate_ransac(pixels[..., :2, :], [cams[0], np.eye(3)]),
                 lambda: triangulate_dlt(pixels, cams[:3]),
                 lambda: triangulate_ransac(pixels, cams, threshold=0.0),
                 lambda: triangulate_dlt(pixels[..., :2, :], [cams[0], cams[0]]),
                 lambda: bootstrap(pixels[0], cams)):
        with pytest.raises(LightnetsError) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(LightnetsError, match="singular projection"):
        triangulate_dlt(pixels[..., :2, :], [cams[0], singular])
    with pytest.raises(LightnetsError, match="singular rotation"):  # lift's Camera refuses one itself
        Camera(np.zeros((3, 3)), np.zeros(3), np.ones(2), np.zeros(2), np.zeros(3), np.zeros(2))
