"""Keypoint readers (LSP/LSPet joints.mat, keypoints.json, COCO keypoints) on tiny generated sets, the LSP skeleton,
and PCK / AUC / pixel error on hand-made examples; one test reads the real LSPet sample when it is there."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightnets.errors import LightnetsError
from lightnets.pose.keypoints import (
    EDGE_TOLERANCE,
    LSP_FLIP_PAIRS,
    LSP_JOINTS,
    LSP_LIMBS,
    LSP_TORSO,
    flip_pairs_from_names,
    flip_permutation,
    person_box,
    read_coco_keypoints,
    read_keypoint_data,
    read_keypoints_json,
    read_lsp_mat,
)
from lightnets.pose.metrics import (
    auc,
    evaluate_pck,
    mean_pixel_error,
    pck,
    pck_at,
    pck_curve,
    plot_pck_curve,
    torso_size,
)

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "lspet-sample.tar.gz"
SIZES = [(40, 30), (50, 60), (32, 32)]  # (width, height) of the generated im00001..im00003


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="JPEG")
    return buffer.getvalue()


def joints_lspet() -> np.ndarray:
    """(3, 14, 3) x, y, visible per image: inside the image, with image 0's joint 0 outside the frame (v=0), image 1's
    joint 5 labelled but far outside, and image 2's joint 1 just over the edge (within the tolerance)."""
    rng = np.random.default_rng(0)
    out = np.zeros((3, 14, 3))
    for i, (w, h) in enumerate(SIZES):
        out[i, :, 0], out[i, :, 1], out[i, :, 2] = rng.uniform(1, w - 1, 14), rng.uniform(1, h - 1, 14), 1
    out[0, 0] = (-12.0, 5.0, 0)
    out[1, 5, :2] = (200.0, 10.0)
    out[2, 1, :2] = (SIZES[2][0] + EDGE_TOLERANCE / 2, 3.0)
    return out


def build(root: Path, labels: dict[str, bytes], images: Sequence[int] = (1, 2, 3), archive: bool = False) -> Path:
    """A set folder ``root/set`` with ``images/imNNNNN.jpg`` and the label files, or a .tar.gz of it."""
    files = {f"images/im{i:05d}.jpg": jpeg(*SIZES[i - 1]) for i in images} | labels
    folder = root / "set"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if not archive:
        return folder
    with tarfile.open(root / "set.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="set")
    return root / "set.tar.gz"


def mat_bytes(joints: np.ndarray, variable: str = "joints") -> bytes:
    scipy_io = pytest.importorskip("scipy.io")
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, {variable: joints})
    return buffer.getvalue()


def keypoints_json(joints: np.ndarray, **overrides: object) -> bytes:
    data = {"joint_names": LSP_JOINTS, "skeleton": [list(limb) for limb in LSP_LIMBS],
            "images": [{"file": f"images/im{i + 1:05d}.jpg", "width": w, "height": h, "keypoints": joints[i].tolist()}
                       for i, (w, h) in enumerate(SIZES)]}
    return json.dumps(data | overrides).encode()


def check_lspet_semantics(data, joints: np.ndarray) -> None:
    assert len(data) == 3 and data.joint_names == LSP_JOINTS and data.flip_pairs == LSP_FLIP_PAIRS
    assert data.records[0].image.endswith("images/im00001.jpg") and (data.records[1].width, data.records[1].height) \
        == SIZES[1]
    np.testing.assert_allclose(np.stack([r.keypoints for r in data.records]), joints[:, :, :2], atol=1e-4)
    assert not data.records[0].visible[0] and data.records[0].visible[1:].all()  # v=0: outside the frame
    assert not data.records[1].visible[5]  # labelled, but 200 px outside a 50 px image: marked unlabelled
    assert data.records[2].visible.all()  # within EDGE_TOLERANCE of the edge: kept
    assert data.skipped == {"keypoint outside image": 1}


@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar.gz"])
def test_lspet_mat_layout(tmp_path: Path, archive: bool) -> None:
    joints = joints_lspet()
    path = build(tmp_path, {"joints.mat": mat_bytes(joints.transpose(1, 2, 0))}, archive=archive)  # (14, 3, N)
    check_lspet_semantics(read_lsp_mat(path), joints)
    check_lspet_semantics(read_keypoint_data(path), joints)


@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar.gz"])
def test_lsp_original_mat_layout(tmp_path: Path, archive: bool) -> None:
    """LSP's (3, 14, N): every joint labelled whatever the third (occlusion) row says; bounds still checked."""
    joints = joints_lspet()
    joints[0, 0] = (3.0, 4.0, 1)  # LSP's flag 1 (occluded) is still a labelled joint
    path = build(tmp_path, {"joints.mat": mat_bytes(joints.transpose(2, 1, 0))}, archive=archive)
    data = read_keypoint_data(path)
    np.testing.assert_allclose(data.records[0].keypoints, joints[0, :, :2], atol=1e-4)
    assert data.records[0].visible.all() and not data.records[1].visible[5]
    assert data.skipped == {"keypoint outside image": 1}


@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar.gz"])
def test_keypoints_json(tmp_path: Path, archive: bool) -> None:
    joints = joints_lspet()
    path = build(tmp_path, {"keypoints.json": keypoints_json(joints)}, archive=archive)
    check_lspet_semantics(read_keypoints_json(path), joints)
    data = read_keypoint_data(path)
    check_lspet_semantics(data, joints)
    assert data.limbs == LSP_LIMBS


def coco_json() -> dict:
    names = ["nose", "left_eye", "right_eye", "left_wrist", "right_wrist"]
    person = [10, 10, 2, 8, 8, 2, 12, 8, 1, 0, 0, 0, 30, 20, 2]  # v=1 labelled (hidden), v=0 unlabelled
    return {"images": [{"id": 1, "file_name": "im00001.jpg", "width": 40, "height": 30},
                       {"id": 2, "file_name": "im00002.jpg", "width": 50, "height": 60}],
            "categories": [{"id": 1, "name": "person", "keypoints": names, "skeleton": [[1, 2], [1, 3], [4, 5]]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": person},
                            {"id": 2, "image_id": 1, "category_id": 1, "keypoints": [5] * 15},
                            {"id": 3, "image_id": 2, "category_id": 1, "keypoints": [0] * 15},
                            {"id": 4, "image_id": 2, "category_id": 1, "keypoints": [0] * 15, "iscrowd": 1}]}


@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar.gz"])
def test_coco_keypoints(tmp_path: Path, archive: bool) -> None:
    path = build(tmp_path, {"images/person_keypoints.json": json.dumps(coco_json()).encode()}, archive=archive)
    for data in (read_coco_keypoints(path), read_keypoint_data(path)):
        assert len(data) == 2 and all(r.image.endswith("images/im00001.jpg") for r in data.records)
        np.testing.assert_array_equal(data.records[0].keypoints[2], [12, 8])
        assert data.records[0].visible.tolist() == [True, True, True, False, True]
        assert data.flip_pairs == [(1, 2), (3, 4)] and data.limbs == [(0, 1), (0, 2), (3, 4)]
        assert data.skipped == {"crowd annotation": 1, "no labelled keypoint": 1}


def test_missing_images_are_counted(tmp_path: Path) -> None:
    joints = joints_lspet()
    path = build(tmp_path, {"keypoints.json": keypoints_json(joints)}, images=[1, 3])
    data = read_keypoint_data(path)
    assert len(data) == 2 and data.skipped["missing image"] == 1
    assert [Path(r.image).name for r in data.records] == ["im00001.jpg", "im00003.jpg"]


def test_missing_images_in_mat_layout_are_counted(tmp_path: Path) -> None:
    path = build(tmp_path, {"joints.mat": mat_bytes(joints_lspet().transpose(1, 2, 0))}, images=[2])
    data = read_keypoint_data(path)
    assert len(data) == 1 and data.skipped == {"missing image": 2, "keypoint outside image": 1}


def one_line_error(call, *names: str) -> str:
    with pytest.raises(LightnetsError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in names), message
    return message


@pytest.mark.parametrize("case", ["wrong shape", "no joints variable", "not a mat file"])
def test_bad_mat_files(tmp_path: Path, case: str) -> None:
    pytest.importorskip("scipy.io")
    data = {"wrong shape": lambda: mat_bytes(np.zeros((14, 2, 3))),
            "no joints variable": lambda: mat_bytes(np.zeros((14, 3, 3)), "points"),
            "not a mat file": lambda: b"this is not a MATLAB file" * 10}[case]()
    path = build(tmp_path, {"joints.mat": data})
    message = one_line_error(lambda: read_keypoint_data(path), "joints.mat")
    if case == "wrong shape":
        assert "(14, 3, N)" in message and "(3, 14, N)" in message and "(14, 2, 3)" in message


def test_mat_without_scipy_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build(tmp_path, {"joints.mat": b"MATLAB"})
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    one_line_error(lambda: read_keypoint_data(path), "joints.mat", "pip install scipy", "keypoints.json")


def bad_json(case: str) -> bytes:
    joints = joints_lspet()
    if case == "NaN coordinate":
        joints[1, 4, 0] = np.nan
        return keypoints_json(joints)
    if case == "joint count":
        return keypoints_json(joints[:, :13])
    if case == "no images list":
        return keypoints_json(joints, images=7)
    if case == "image without file":
        return keypoints_json(joints, images=[{"keypoints": []}])
    if case == "COCO without keypoint names":
        coco = coco_json()
        del coco["categories"][0]["keypoints"]
        return json.dumps(coco).encode()
    if case == "neither format":
        return json.dumps({"hello": 1}).encode()
    return b"{not json"


@pytest.mark.parametrize("case", ["NaN coordinate", "joint count", "no images list", "image without file",
                                  "COCO without keypoint names", "neither format", "invalid json"])
def test_bad_json_files(tmp_path: Path, case: str) -> None:
    path = build(tmp_path, {"keypoints.json": bad_json(case)})
    message = one_line_error(lambda: read_keypoint_data(path), "keypoints.json")
    if case == "NaN coordinate":
        assert "image 1" in message and "left_knee" in message


def test_all_images_missing_is_an_error(tmp_path: Path) -> None:
    path = build(tmp_path, {"keypoints.json": keypoints_json(joints_lspet())}, images=[])
    one_line_error(lambda: read_keypoint_data(path), "keypoints.json", "none of the 3 images")


def test_flip_permutation_swaps_left_and_right() -> None:
    assert len(LSP_JOINTS) == 14 and LSP_JOINTS[LSP_TORSO[0]] == "left_shoulder" and LSP_JOINTS[LSP_TORSO[1]] \
        == "right_hip"
    perm = flip_permutation(LSP_FLIP_PAIRS, len(LSP_JOINTS))
    assert [perm[p] for p in perm] == list(range(14))  # an involution
    swapped = {"left": "right", "right": "left"}
    for i, j in enumerate(perm):
        side, _, part = LSP_JOINTS[i].partition("_")
        assert LSP_JOINTS[j] == (f"{swapped[side]}_{part}" if side in swapped else LSP_JOINTS[i])
    assert perm[12:] == [12, 13] and flip_pairs_from_names(LSP_JOINTS) == LSP_FLIP_PAIRS


def test_split_subset_and_person_box(tmp_path: Path) -> None:
    data = read_keypoint_data(build(tmp_path, {"keypoints.json": keypoints_json(joints_lspet())}))
    train, val = data.split_by_name("im00002", "im2")  # numbers compared as numbers
    assert [Path(r.image).stem for r in val.records] == ["im00002"] and len(train) == 2
    assert len(data.subset([2, 0])) == 2 and data.subset([2]).records[0] is data.records[2]
    one_line_error(lambda: data.split_by_name("im00100", "im00200"), "im00100", "im00001 to im00003")
    keypoints = np.array([[10, 20], [30, 60], [500, 500]], dtype=np.float32)
    assert person_box(keypoints, np.array([True, True, False]), scale=1.5) == (20.0, 40.0, 60.0)
    one_line_error(lambda: person_box(keypoints, np.zeros(3, bool)), "labelled")


def hand_made() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two records of three joints, torso 10 and 20 px, predictions off along x by 1, 3, 5 and 2, 8, 30 px;
    the last joint of record 1 is unlabelled (it would be a miss everywhere if it counted)."""
    target = np.array([[[5, 5], [10, 10], [20, 5]], [[7, 8], [9, 1], [3, 3]]], dtype=np.float64)
    pred = target + np.array([[1, 3, 5], [2, 8, 30]], dtype=np.float64)[..., None] * [1, 0]
    visible = np.array([[True, True, True], [True, True, False]])
    return pred, target, visible, np.array([10.0, 20.0])


def test_pck_hand_made_fractions() -> None:
    pred, target, visible, torso = hand_made()
    np.testing.assert_allclose(pck(pred, target, visible, torso, [0.1, 0.3, 0.5]),
                               [[1, 0, 0], [1, 0.5, 0], [1, 1, 1]])
    np.testing.assert_allclose(pck_at(pred, target, visible, torso, 0.3), [1, 0.5, 0])
    thresholds, values = pck_curve(pred, target, visible, torso, [0.1, 0.3, 0.5])
    np.testing.assert_allclose(values, [2 / 5, 3 / 5, 1])
    assert auc(thresholds, values) == pytest.approx(((0.4 + 0.6) / 2 * 0.2 + (0.6 + 1) / 2 * 0.2) / 0.4)
    assert mean_pixel_error(pred, target, visible) == pytest.approx((1 + 3 + 5 + 2 + 8) / 5)
    everything = np.ones_like(visible)  # had the unlabelled joint counted, joint 2 would be at 0.5
    assert pck(pred, target, everything, torso, [0.5])[0, 2] == 0.5
    assert np.isnan(pck(pred, target, np.zeros_like(visible), torso)).all()  # never scored: NaN, not 0 or 1


def lsp_people(count: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.uniform(0, 200, (count, 14, 2)), rng.uniform(size=(count, 14)) > 0.2


def test_pck_curve_auc_and_torso_fallback(tmp_path: Path) -> None:
    target, visible = lsp_people()
    visible[:, list(LSP_TORSO)] = True
    visible[3, LSP_TORSO[0]] = False  # no torso size: left out, counted
    torso = torso_size(target, visible)
    assert np.isnan(torso[3]) and np.isfinite(np.delete(torso, 3)).all()
    np.testing.assert_allclose(torso[0], np.linalg.norm(target[0, 9] - target[0, 2]))
    noisy = target + np.random.default_rng(2).normal(0, 8, target.shape)
    thresholds, values = pck_curve(noisy, target, visible, torso)
    assert thresholds[0] == 0 and thresholds[-1] == 0.5 and (np.diff(values) >= 0).all() and 0 < values[-1] <= 1
    perfect, far = evaluate_pck(target, target, visible), evaluate_pck(target + 1e4, target, visible)
    assert perfect.auc == 1.0 and far.auc == 0.0 and perfect.at(0.2) == 1.0 and far.at(0.2) == 0.0
    assert perfect.skipped_records == 1 and perfect.scored.sum() == np.delete(visible, 3, axis=0).sum()
    assert perfect.per_joint.shape == (51, 14) and perfect.mean_pixel_error == 0.0
    one_line_error(lambda: pck(target, target[:, :13], visible, torso), "(N, K, 2)")
    one_line_error(lambda: auc([0.2, 0.1], [1, 1]), "increasing")
    png = plot_pck_curve({"perfect": (perfect.thresholds, perfect.overall), "noisy": (thresholds, values)},
                         tmp_path / "pck.png")
    assert png is None or png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not SAMPLE.exists(), reason="the LSPet sample archive is not in shared/datasets")
def test_real_lspet_sample() -> None:
    pytest.importorskip("scipy.io")
    data = read_keypoint_data(SAMPLE)
    assert len(data) == 500 and data.joint_names == LSP_JOINTS and data.records[0].keypoints.shape == (14, 2)
    first = data.records[0]
    assert first.image == "lspet-sample/images/im00001.jpg" and (first.width, first.height) == (157, 105)
    # joints.mat column 1, joint 1 (right ankle): (0, -26.109114520, 0): out of the frame, so unlabelled
    np.testing.assert_allclose(first.keypoints[0], [0.0, -26.10911452], atol=1e-4)
    assert not first.visible[0] and first.visible[1:].all()
    np.testing.assert_allclose(first.keypoints[1], [26.03094352, 86.41022512], atol=1e-4)
    assert data.skipped == {}  # im00024's head top at y = -1.17 lies within the edge tolerance
