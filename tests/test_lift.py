"""RepNet lifting: skeleton, camera model, metrics, the Human3.6M reader, the losses and the commands, on generated
skeletons seen by generated cameras (Human3.6M itself never goes into a test)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lightnets.cli import main
from lightnets.errors import LightnetsError
from lightnets.lift import (
    BONES,
    JOINTS,
    Camera,
    LiftTask,
    bone_matrix,
    camera_rotation,
    create_lifter,
    joint_errors,
    normalize_2d,
    procrustes_aligned,
    read_h36m,
    read_keypoints,
    symmetry_error,
)
from lightnets.lift.skeleton import FROM_H36M17, FROM_MPII, SYMMETRIC_BONES, torso_frame

# A standing 17-joint Human3.6M pose (mm, z up): Hip, RHip, RKnee, RFoot, LHip, LKnee, LFoot, Spine, Thorax,
# Neck/Nose, Head, LShoulder, LElbow, LWrist, RShoulder, RElbow, RWrist.
STANDING = np.array([[0, 0, 1000], [-130, 0, 1000], [-130, 0, 550], [-130, 0, 100], [130, 0, 1000], [130, 0, 550],
                     [130, 0, 100], [0, 0, 1230], [0, 0, 1480], [0, -20, 1580], [0, 0, 1700], [170, 0, 1440],
                     [170, 0, 1160], [170, 0, 900], [-170, 0, 1440], [-170, 0, 1160], [-170, 0, 900]], float)
# MPII order of the 16 Stacked-Hourglass joints, as the 17-joint indices (the reader maps them back).
MPII_FROM_H36M17 = (3, 2, 1, 4, 5, 6, 0, 8, 9, 10, 16, 15, 14, 11, 12, 13)


def rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rx @ rz


def camera_looking_at_origin(yaw: float) -> dict[str, np.ndarray]:
    """A camera 5 m from the subject, 1 m up, looking at it: world z up becomes image y down."""
    centre = np.array([5000 * math.sin(yaw), -5000 * math.cos(yaw), 1000.0])
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return {"R": np.stack([right, down, forward]), "T": centre, "f": np.array([1150.0, 1150.0]),
            "c": np.array([500.0, 500.0]), "k": np.array([-0.2, 0.2, 0.0]), "p": np.array([1e-3, -1e-3])}


def generated_poses(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random people: the standing pose with random bone scale, random limb swings and a random heading."""
    poses = np.repeat(STANDING[None], n, axis=0) * rng.uniform(0.85, 1.15, (n, 1, 1))
    for limb in ((1, 2, 3), (4, 5, 6), (11, 12, 13), (14, 15, 16)):
        swing = rng.uniform(-0.8, 0.8, n)
        base = poses[:, limb[0]].copy()
        for j in limb[1:]:
            rel = poses[:, j] - base[:, None].squeeze(1)
            y = rel[:, 1] * np.cos(swing) - rel[:, 2] * np.sin(swing)
            z = rel[:, 1] * np.sin(swing) + rel[:, 2] * np.cos(swing)
            poses[:, j] = base + np.stack([rel[:, 0], y, z], 1)
    headings = rng.uniform(-math.pi, math.pi, n)
    return np.stack([p @ rotation(h).T for p, h in zip(poses, headings, strict=True)]).astype(np.float32)


def write_h36m(path, frames_per_subject: int = 40, seed: int = 0, invalid: int = 3) -> None:
    """A file in the layout of the Human3.6M npz (h36m.md): 7 subjects, 4 cameras, SH-like noisy detections with
    ``invalid`` rows of subject 11's first camera marked invalid (NaN), as S11 Directions is in the real one."""
    rng = np.random.default_rng(seed)
    subjects = [1, 5, 6, 7, 8, 9, 11]
    world = generated_poses(frames_per_subject * len(subjects), rng)
    subject = np.repeat(subjects, frames_per_subject).astype(np.int8)
    cams = [camera_looking_at_origin(y) for y in (0.3, 1.9, 3.5, 5.0)]
    arrays = {f"cam_{a}": np.stack([np.stack([c[a] for c in cams])] * len(subjects)) for a in "RTfckp"}
    sh = np.zeros((len(world), 4, 16, 2), np.float32)
    for ci, c in enumerate(cams):
        projected = Camera(**c).project(world.astype(np.float64))
        sh[:, ci] = (projected[:, MPII_FROM_H36M17] + rng.normal(0, 3, (len(world), 16, 2))).round()
    valid = np.ones((len(world), 4), bool)
    s11 = np.flatnonzero(subject == 11)[:invalid]
    valid[s11, 0] = False
    sh[s11, 0] = np.nan
    np.savez(path, pose3d_world=world, pose2d_sh=sh, sh_valid=valid, subject=subject,
             action=rng.integers(0, 3, len(world)).astype(np.int8),
             action_names=np.array(["Directions", "Eating", "Walking"]), cam_subjects=np.array(subjects, np.int8),
             **arrays)


@pytest.fixture(scope="module")
def h36m(tmp_path_factory):
    path = tmp_path_factory.mktemp("h36m") / "h36m.npz"
    write_h36m(path)
    return path


def test_joint_maps_and_bones_are_one_skeleton():
    assert len(JOINTS) == 16 and len(BONES) == 15
    assert sorted(FROM_MPII) == list(range(16)) and 7 not in FROM_H36M17  # Spine is the joint left out
    # Every joint but the root is the child of exactly one bone: a tree.
    assert sorted(child for _, child in BONES) == list(range(1, 16))
    pose = torch.randn(16, 3)
    bones = pose.T @ bone_matrix()
    for b, (parent, child) in enumerate(BONES):
        assert torch.allclose(bones[:, b], pose[child] - pose[parent])
    for left, right in SYMMETRIC_BONES:
        assert JOINTS[BONES[left][1]].startswith("L") and JOINTS[BONES[right][1]].startswith("R")


def test_symmetry_error_is_zero_for_a_symmetric_pose_and_sees_a_longer_arm():
    pose = torch.as_tensor(STANDING[list(FROM_H36M17)])
    assert float(symmetry_error(pose)) == pytest.approx(0.0, abs=1e-9)
    longer = pose.clone()
    longer[JOINTS.index("LWrist"), 2] -= 60  # the left forearm 60 mm longer: 60 / 6 bone pairs
    assert float(symmetry_error(longer)) == pytest.approx(10.0)


def test_projection_is_the_pinhole_without_distortion_and_refuses_a_singular_camera():
    c = camera_looking_at_origin(0.7) | {"k": np.zeros(3), "p": np.zeros(2)}
    cam = Camera(**c)
    point = np.array([[100.0, 200.0, 1300.0]])
    x = cam.to_camera(point)[0]
    assert np.allclose(cam.project(point)[0], [1150 * x[0] / x[2] + 500, 1150 * x[1] / x[2] + 500])
    with pytest.raises(LightnetsError, match="singular"):
        Camera(**(c | {"R": np.zeros((3, 3))}))
    with pytest.raises(LightnetsError, match="parameter T"):
        Camera(**(c | {"T": np.array([0.0, np.nan, 0.0])}))


def test_normalisation_forgets_position_and_image_scale():
    pose = torch.rand(5, 16, 2) * 300
    moved = pose * 2.5 + torch.tensor([40.0, -7.0])
    assert torch.allclose(normalize_2d(pose), normalize_2d(moved), atol=1e-5)
    n = normalize_2d(pose)
    assert torch.allclose(n.mean(1), torch.zeros(5, 2), atol=1e-5)
    assert torch.allclose(n.flatten(1).std(1), torch.ones(5), atol=1e-5)


def test_procrustes_undoes_a_similarity_but_not_a_reflection():
    truth = torch.as_tensor(generated_poses(4, np.random.default_rng(1))[:, list(FROM_H36M17)], dtype=torch.float64)
    r = torch.as_tensor(rotation(0.8, 0.4))
    moved = 0.7 * truth @ r.T + torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    assert (procrustes_aligned(moved, truth) - truth).abs().max() < 1e-6
    mirrored = truth * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert (procrustes_aligned(mirrored, truth) - truth).norm(dim=-1).mean() > 20


def test_n_mpjpe_forgives_only_the_size_of_a_pose():
    truth = torch.as_tensor(generated_poses(4, np.random.default_rng(2))[:, list(FROM_H36M17)], dtype=torch.float64)
    bigger = 1.3 * truth + torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)  # the root is subtracted too
    errors = joint_errors(bigger, truth)
    assert errors["n_p1"].max() < 1e-6 and errors["p1"].mean() > 10
    turned = truth @ torch.as_tensor(rotation(0.0, 0.5)).T
    assert joint_errors(turned, truth)["n_p1"].mean() > 10  # a rotation is not forgiven


def test_camera_rotation_recovers_the_rotation_of_a_scaled_orthographic_camera():
    r = torch.as_tensor(rotation(2.0, -0.3), dtype=torch.float32)
    k = 3.0 * r[None, :2]
    recovered = camera_rotation(k)[0]
    assert torch.allclose(recovered, r, atol=1e-5) and float(torch.linalg.det(recovered)) == pytest.approx(1.0)


def test_torso_frame_forgets_the_heading_but_not_a_mirror():
    poses = torch.as_tensor(generated_poses(6, np.random.default_rng(3))[:, FROM_H36M17], dtype=torch.float64)
    turned = torch.stack([p @ torch.as_tensor(rotation(h, 0.4 * h)).T for p, h in zip(poses, range(-3, 3),
                                                                                     strict=True)])
    assert torch.allclose(torso_frame(turned), torso_frame(poses), atol=1e-9)
    aligned = torso_frame(poses)
    hips = aligned[:, JOINTS.index("RHip")] - aligned[:, JOINTS.index("LHip")]
    assert torch.allclose(hips[:, 1:], torch.zeros(6, 2, dtype=torch.float64), atol=1e-9) and (hips[:, 0] > 0).all()
    spine = aligned[:, JOINTS.index("Hip")] - aligned[:, JOINTS.index("Thorax")]
    assert (spine[:, 1] > 0).all() and torch.allclose(spine[:, 2], torch.zeros(6, dtype=torch.float64), atol=1e-9)
    mirrored = poses * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # a mirror is no rotation: it stays
    assert (torso_frame(mirrored) - aligned).abs().amax() > 10


def test_reader_projects_ground_truth_maps_detections_and_counts_invalid_rows(h36m):
    gt = read_h36m(h36m, "gt", (9, 11))
    sh = read_h36m(h36m, "sh", (9, 11))
    assert len(gt) == 2 * 40 * 4 and gt.skipped == 0
    assert len(sh) == len(gt) - 3 and sh.skipped == 3
    assert np.isfinite(sh.pose2d).all()
    # The detections are the projections plus noise, mapped into the same joint order.
    rows = np.flatnonzero(gt.camera != 0)
    same = np.flatnonzero(sh.camera != 0)
    assert np.median(np.abs(gt.pose2d[rows] - sh.pose2d[same])) < 5
    # Camera-frame 3D: the projection of pose3d through the intrinsics (no distortion) is close to the 2D.
    pinhole = gt.pose3d[..., :2] / gt.pose3d[..., 2:] * 1150 + 500
    assert np.median(np.abs(pinhole - gt.pose2d)) < 15


def test_reader_names_what_is_missing(tmp_path, h36m):
    with np.load(h36m) as z:
        kept = {k: z[k] for k in z.files if k != "cam_R"}
    np.savez(tmp_path / "partial.npz", **kept)
    with pytest.raises(LightnetsError, match="lacks cam_R"):
        read_h36m(tmp_path / "partial.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(LightnetsError, match="cannot read"):
        read_h36m(tmp_path / "garbage.npz")
    np.savez(tmp_path / "videopose3d.npz", positions_3d=np.array([{"S1": {}}], dtype=object))
    with pytest.raises(LightnetsError, match="VideoPose3D's layout"):
        read_h36m(tmp_path / "videopose3d.npz")
    with pytest.raises(LightnetsError, match="no cameras for subject S3"):
        read_h36m(h36m, "gt", (3,))


def test_task_keeps_each_side_on_its_own_loss():
    """The critic's gradient is that of its own loss alone, and the generator gets none from the critic's loss."""
    torch.manual_seed(0)
    model = create_lifter({"width": 32, "blocks": 1})
    batch = {"pose2d": normalize_2d(torch.randn(8, 16, 2)), "real": torch.randn(8, 16, 3) * 0.3}
    torch.manual_seed(1)
    loss, metrics = LiftTask()(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) == {"rep", "cam", "wdist", "gp"}
    critic_grads = [p.grad.clone() for p in model.critic.parameters()]
    generator_grads = [p.grad.clone() for p in model.generator.parameters()]
    model.zero_grad()
    pose3d, k = model(batch["pose2d"])
    torch.manual_seed(1)  # the same gradient-penalty mixing weights
    fake = pose3d.detach()
    mix_weight = torch.rand(8, 1, 1)
    mix = (mix_weight * batch["real"] + (1 - mix_weight) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(model.critic(mix).sum(), mix, create_graph=True)
    critic_only = (model.critic(fake).mean() - model.critic(batch["real"]).mean()
                   + 10 * (grad.flatten(1).norm(dim=1) - 1).pow(2).mean())
    critic_only.backward()
    for a, p in zip(critic_grads, model.critic.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.generator.parameters())
    assert any(g.abs().max() > 0 for g in generator_grads)


def test_keypoint_files(tmp_path):
    poses = np.random.default_rng(0).uniform(0, 500, (3, 16, 2))
    (tmp_path / "k.json").write_text(json.dumps({"keypoints": poses.tolist()}))
    (tmp_path / "k.csv").write_text("x0,y0\n" + "\n".join(",".join(map(str, p.ravel())) for p in poses))
    np.savez(tmp_path / "k.npz", keypoints=poses)
    for name in ("k.json", "k.csv", "k.npz"):
        assert np.allclose(read_keypoints(tmp_path / name), poses)
    mpii = poses[:, np.argsort(FROM_MPII)]  # the same poses written in MPII's joint order
    assert np.allclose(read_keypoints(_save(tmp_path / "m.npz", mpii), "mpii"), poses)
    with pytest.raises(LightnetsError, match="16 joints"):
        read_keypoints(_save(tmp_path / "short.npz", poses[:, :14]))
    bad = poses.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(LightnetsError, match="pose 1 has NaN"):
        read_keypoints(_save(tmp_path / "nan.npz", bad))
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(LightnetsError, match="cannot read keypoints"):
        read_keypoints(tmp_path / "bad.json")


def test_keypoint_files_with_named_joints(tmp_path):
    """LSP's 14 named joints (no pelvis, no thorax) map to the lifter's 16 by name, the two missing joints as
    midpoints; names the lifter cannot use, or coordinates of the wrong shape, are one clear error."""
    lsp = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
           "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"]
    poses = np.random.default_rng(1).uniform(0, 500, (2, 14, 2))
    path = tmp_path / "lsp.json"
    path.write_text(json.dumps({"joint_names": lsp, "keypoints": poses.tolist()}))
    got = read_keypoints(path)
    assert got.shape == (2, 16, 2)
    at = {name: i for i, name in enumerate(lsp)}
    ours = {name: i for i, name in enumerate(JOINTS)}
    assert np.allclose(got[:, ours["Hip"]], (poses[:, at["right_hip"]] + poses[:, at["left_hip"]]) / 2)
    assert np.allclose(got[:, ours["Thorax"]], (poses[:, at["right_shoulder"]] + poses[:, at["left_shoulder"]]) / 2)
    for mine, theirs in (("RFoot", "right_ankle"), ("LWrist", "left_wrist"), ("Neck", "neck"), ("Head", "head_top")):
        assert np.allclose(got[:, ours[mine]], poses[:, at[theirs]])
    shuffled = np.random.default_rng(2).permutation(16)  # our own names in any order, MPII-style abbreviations
    names = [("r_" + j[1:].lower()) if j[0] == "R" and j[1].isupper() else j for j in np.asarray(JOINTS)[shuffled]]
    ours16 = np.random.default_rng(3).uniform(0, 500, (1, 16, 2))
    np.savez(tmp_path / "named.npz", keypoints=ours16[:, shuffled], joint_names=np.asarray(names))
    assert np.allclose(read_keypoints(tmp_path / "named.npz"), ours16)
    (tmp_path / "coco.json").write_text(json.dumps({"joint_names": ["nose", "left_eye"], "keypoints": [[[1, 2]] * 2]}))
    with pytest.raises(LightnetsError, match="have no Hip, RHip"):
        read_keypoints(tmp_path / "coco.json")
    path.write_text(json.dumps({"joint_names": lsp, "keypoints": poses[:, :13].tolist()}))
    with pytest.raises(LightnetsError, match="its 14 named joints"):
        read_keypoints(path)


def _save(path, keypoints):
    np.savez(path, keypoints=keypoints)
    return path


def test_the_authors_code_layout_shares_its_first_block_between_pose_and_camera():
    w = 8
    model = create_lifter({"width": w, "blocks": 2, "shared_trunk": True})
    layer = w * w + w
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(model.trunk) == 32 * w + w + 2 * layer
    assert count(model.generator) == 4 * layer + layer + 48 * w + 48  # 2 blocks, the extra layer, the output
    assert count(model.camera) == 4 * layer + 6 * w + 6
    pose2d = normalize_2d(torch.randn(3, 16, 2))
    before = [t.clone() for t in model(pose2d)]
    with torch.no_grad():
        model.trunk[0].bias.add_(1.0)
    after = model(pose2d)
    assert all(not torch.allclose(a, b) for a, b in zip(before, after, strict=True))
    assert after[0].shape == (3, 16, 3) and after[1].shape == (3, 2, 3)


def test_l1_losses_are_the_authors_codes_weighted_mean_absolute_errors():
    torch.manual_seed(0)
    model = create_lifter({"width": 16, "blocks": 1})
    batch = {"pose2d": normalize_2d(torch.randn(4, 16, 2)), "real": torch.randn(4, 16, 3) * 0.3}
    _, frobenius = LiftTask(loss_norm="frobenius")(model, batch)
    _, l1 = LiftTask(loss_norm="l1")(model, batch)
    pose3d, k = model(batch["pose2d"])
    error = (batch["pose2d"] - torch.einsum("bij,bnj->bni", k, pose3d)).abs()
    weights = torch.ones(16)
    weights[[JOINTS.index("Neck"), JOINTS.index("Head")]] = 0.1
    assert torch.allclose(l1["rep"], (error * weights[:, None]).sum((1, 2)).mean() / 32, atol=1e-6)
    kk = k @ k.transpose(1, 2)
    scaled = 2 / kk.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None] * kk - torch.eye(2)
    assert torch.allclose(l1["cam"], scaled.abs().sum((1, 2)).mean(), atol=1e-6)
    assert torch.allclose(frobenius["cam"], scaled.flatten(1).norm(dim=1).mean(), atol=1e-6)


def test_train_eval_predict_and_resume_through_the_command_line(tmp_path, h36m, capsys):
    run = tmp_path / "run"
    common = ["--data", str(h36m), "--width", "32", "--blocks", "1", "--batch-size", "64", "--threads", "1",
              "--amp", "none", "--quiet"]
    assert main(["lift", "train", *common, "--inputs", "sh", "--epochs", "2", "--shared-trunk", "--loss-norm", "l1",
                 "--critic-frame", "torso", "--out", str(run)]) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["kind"] == "lift" and record["skipped"] == {"train": 0, "test": 3}
    assert record["loss_norm"] == "l1" and record["lifter"]["shared_trunk"] and record["critic_frame"] == "torso"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all(math.isfinite(r["val_p1_mm"]) for r in lines)
    assert main(["lift", "train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["lift", "eval", str(run), "--data", str(h36m)]) == 0
    table = capsys.readouterr().out
    assert "p1_mm" in table and "Walking" in table
    keypoints = tmp_path / "k.json"
    gt = read_h36m(h36m, "gt", (9,))
    keypoints.write_text(json.dumps(gt.pose2d[:5].tolist()))
    out = tmp_path / "lifted.json"
    assert main(["lift", "predict", str(run), str(keypoints), "--out", str(out)]) == 0
    lifted = json.loads(out.read_text())
    assert np.asarray(lifted["poses3d"]).shape == (5, 16, 3) and lifted["joints"] == list(JOINTS)
    assert (tmp_path / "lifted.png").read_bytes()[:4] == b"\x89PNG"  # matplotlib is in the dev extra
    assert main(["lift", "predict", str(run), str(keypoints), "--out", str(keypoints)]) == 2
    assert "input file" in capsys.readouterr().err
    assert main(["lift", "eval", str(tmp_path / "nothing"), "--data", str(h36m)]) == 2


def test_convert_a_3d_pose_baseline_folder(tmp_path, capsys):
    """cameras.h5 (R as stored there: transposed), 32-joint 3D at 50 Hz and per-camera detection files, one camera's
    file missing: the npz holds every 5th frame, the projections agree, and the missing camera's rows are invalid."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(3)
    root = tmp_path / "h36m"
    cams = [camera_looking_at_origin(y) for y in (0.3, 1.9, 3.5, 5.0)]
    with h5py.File(root.mkdir() or root / "cameras.h5", "w") as h:
        for s in (1, 5, 6, 7, 8, 9, 11):
            for ci, cam in enumerate(cams):
                for a in "RTfckp":
                    value = cam[a].T if a == "R" else cam[a].reshape(-1, 1)
                    h[f"subject{s}/camera{ci + 1}/{a}"] = value
    world17 = generated_poses(50, rng)
    world32 = np.zeros((50, 32, 3), np.float32)
    world32[:, [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]] = world17
    (root / "S9" / "MyPoses" / "3D_positions").mkdir(parents=True)
    (root / "S9" / "StackedHourglass").mkdir(parents=True)
    with h5py.File(root / "S9/MyPoses/3D_positions/Walking 1.h5", "w") as h:
        h["3D_positions"] = world32.reshape(50, 96).T
    for ci, camera in enumerate(("54138969", "55011271", "58860488")):  # the fourth camera's file is missing
        projected = Camera(**cams[ci]).project(world17.astype(np.float64))[:, MPII_FROM_H36M17]
        with h5py.File(root / f"S9/StackedHourglass/Walking_1.{camera}.h5", "w") as h:
            h["poses"] = projected.round()
    assert main(["lift", "convert", str(root), "--out", str(tmp_path / "h36m.npz")]) == 0
    assert "1 sequences, 10 frames, 10 invalid" in capsys.readouterr().out
    sh = read_h36m(tmp_path / "h36m.npz", "sh", (9,))
    gt = read_h36m(tmp_path / "h36m.npz", "gt", (9,))
    assert len(gt) == 40 and len(sh) == 30 and sh.skipped == 10
    assert np.abs(gt.pose2d[:30] - sh.pose2d).max() <= 0.5 and set(gt.action.tolist()) == {14}
    (root / "cameras.h5").unlink()
    assert main(["lift", "convert", str(root), "--out", str(tmp_path / "again.npz")]) == 2
    assert "no cameras.h5" in capsys.readouterr().err
