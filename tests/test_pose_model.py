"""Convolutional pose machines: stage outputs and rebuilding from config, Gaussian targets decoded back to their
keypoints (the pixel-centre convention), unlabelled joints left out of the loss, flips, and a short fit."""

import pytest
import torch

from lightnets import LightnetsError, create_model, data_config
from lightnets.data.augment import IMAGENET_MEAN, IMAGENET_STD
from lightnets.pose import LSP_FLIP_PAIRS, flip_permutation
from lightnets.pose.heatmaps import (
    decode_heatmaps,
    flip_heatmaps,
    flip_keypoints,
    gaussian_heatmaps,
    heatmap_loss,
    unzoom_heatmaps,
)
from lightnets.pose.model import create_pose_machine

pytestmark = pytest.mark.usefixtures("one_thread")

LSP_PERM = flip_permutation(LSP_FLIP_PAIRS, 14)


def random_keypoints(batch: int, joints: int, width: int, height: int, margin: float, seed: int = 0) -> torch.Tensor:
    """Sub-pixel keypoints at least ``margin`` px inside a ``width x height`` image."""
    g = torch.Generator().manual_seed(seed)
    unit = torch.rand(batch, joints, 2, generator=g)
    return margin + unit * torch.tensor([width - 2 * margin, height - 2 * margin])


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("stride", [4, 8])
def test_one_map_per_stage_at_the_output_stride(stages, stride):
    model = create_pose_machine("mobilenetv1_025", num_joints=14, stages=stages, output_stride=stride,
                                neck_chs=32, stage_chs=32)
    outputs = model(torch.randn(2, 3, 64, 64))
    assert len(outputs) == stages
    for out in outputs:
        assert out.shape == (2, 15, 64 // stride, 64 // stride)
        assert out.abs().mean() < 0.1  # small output weights: the maps start near 0
    assert not any(name.startswith(("backbone.head", "backbone.final")) for name, _ in model.named_parameters())


def test_config_rebuilds_the_same_model():
    model = create_pose_machine("mobilenetv1_025", num_joints=4, stages=2, output_stride=4, neck_chs=16,
                                stage_chs=24, stage_depth=2, width_mult=0.5, input_norm=([0.5] * 3, [0.25] * 3))
    again = create_pose_machine(**model.config)
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), again(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert data_config(again).mean == (0.5,) * 3 and data_config(again).std == (0.25,) * 3
    assert data_config(create_pose_machine("mobilenetv1_025", 4)).mean == IMAGENET_MEAN
    assert data_config(create_pose_machine("mobilenetv1_025", 4)).std == IMAGENET_STD


def test_pretrained_backbone_from_a_weights_file(tmp_path):
    from safetensors.torch import save_file

    backbone = create_model("mobilenetv1_025")
    save_file(backbone.state_dict(), tmp_path / "backbone.safetensors")
    model = create_pose_machine("mobilenetv1_025", 14, pretrained=str(tmp_path / "backbone.safetensors"))
    torch.testing.assert_close(model.backbone.stem[0].weight, backbone.stem[0].weight, rtol=0, atol=0)
    assert data_config(model).mean == IMAGENET_MEAN and model.config["input_norm"] == [list(IMAGENET_MEAN),
                                                                                         list(IMAGENET_STD)]


def test_bad_arguments_are_refused():
    with pytest.raises(LightnetsError, match="stages must be an integer >= 1"):
        create_pose_machine("mobilenetv1_025", 14, stages=0)
    with pytest.raises(LightnetsError, match="num_joints"):
        create_pose_machine("mobilenetv1_025", 0)
    with pytest.raises(LightnetsError, match="power of two"):
        create_pose_machine("mobilenetv1_025", 14, output_stride=6)
    with pytest.raises(LightnetsError, match="permutation"):
        flip_heatmaps(torch.zeros(1, 15, 4, 4), [0] * 14)


@pytest.mark.parametrize("stride", [4, 8])
def test_targets_decode_back_to_their_keypoints(stride):
    width, height = 128, 96
    keypoints = random_keypoints(4, 14, width, height, margin=2 * stride)
    targets, _ = gaussian_heatmaps(keypoints, torch.ones(4, 14, dtype=torch.bool), (height // stride, width // stride),
                                   stride)
    decoded, confidence = decode_heatmaps(targets, stride)
    assert (decoded - keypoints).abs().max() < 0.1  # input pixels; a half-pixel slip would be stride / 2
    assert (confidence > 0.5).all() and (confidence <= 1).all()


@pytest.mark.parametrize("zoom", [0.8, 1.25])
def test_maps_of_a_zoomed_crop_unzoom_onto_the_crop_at_scale_1(zoom):
    """A joint at crop point p sits at (p - S/2) * zoom + S/2 in the crop magnified ``zoom`` times; its maps, unzoomed,
    decode back to p (multi-scale testing averages such maps)."""
    size, stride = 128, 4
    keypoints = random_keypoints(3, 14, size, size, margin=40)
    zoomed = (keypoints - size / 2) * zoom + size / 2
    maps, _ = gaussian_heatmaps(zoomed, torch.ones(3, 14, dtype=torch.bool), (size // stride, size // stride), stride,
                                sigma=2.0)
    decoded, _ = decode_heatmaps(unzoom_heatmaps(maps, zoom), stride)
    # Bilinear resampling shifts a peak by a fraction of an output px; a wrong zoom or centre would move joints 24 px
    # from the centre by 5 px or more, a pixel-centre slip by stride / 2.
    assert (decoded - keypoints).abs().max() < 0.15 * stride
    assert torch.equal(unzoom_heatmaps(maps, 1.0), maps)
    with pytest.raises(LightnetsError, match="zoom"):
        unzoom_heatmaps(maps, 0.0)


@pytest.mark.parametrize("stride", [4, 8])
def test_output_pixel_centres(stride):
    # Output pixel (j=3, i=2) covers input [3s, 4s) x [2s, 3s): a keypoint at its centre peaks exactly there, at 1.
    keypoints = torch.tensor([[[3.5 * stride, 2.5 * stride]]])
    targets, _ = gaussian_heatmaps(keypoints, torch.ones(1, 1, dtype=torch.bool), (6, 8), stride)
    assert targets[0, 0, 2, 3] == 1 and targets[0, 0].argmax() == 2 * 8 + 3
    torch.testing.assert_close(decode_heatmaps(targets, stride)[0], keypoints)


def test_background_is_one_minus_the_joints_maximum():
    keypoints = random_keypoints(2, 14, 64, 64, margin=4)
    targets, weights = gaussian_heatmaps(keypoints, torch.ones(2, 14, dtype=torch.bool), (16, 16), 4, sigma=2.0)
    torch.testing.assert_close(targets[:, -1], 1 - targets[:, :-1].amax(dim=1))
    assert targets.shape == (2, 15, 16, 16) and weights.shape == (2, 15, 1, 1)


def test_unlabelled_joints_have_no_weight_and_no_effect_on_the_loss():
    keypoints = random_keypoints(2, 14, 64, 64, margin=4)
    visible = torch.ones(2, 14, dtype=torch.bool)
    visible[0, 3] = visible[1, 10] = False
    targets, weights = gaussian_heatmaps(keypoints, visible, (16, 16), 4)
    assert weights[0, 3].item() == weights[1, 10].item() == 0
    assert weights.sum() == 2 * 15 - 2 and (weights[:, -1] == 1).all()
    assert targets[0, 3].abs().max() == 0 and targets[1, 10].abs().max() == 0
    moved = keypoints.clone()
    moved[0, 3] = float("nan")  # an unlabelled joint's coordinates are never read
    torch.testing.assert_close(gaussian_heatmaps(moved, visible, (16, 16), 4)[0], targets, rtol=0, atol=0)

    outputs = [torch.rand(2, 15, 16, 16) for _ in range(3)]
    loss, parts = heatmap_loss(outputs, targets, weights)
    changed = targets.clone()
    changed[0, 3] = torch.rand(16, 16)
    assert heatmap_loss(outputs, changed, weights)[0] == loss
    changed[0, 4] = torch.rand(16, 16)  # a labelled joint's target does count
    assert heatmap_loss(outputs, changed, weights)[0] != loss
    assert sorted(parts) == ["stage1", "stage2", "stage3"]
    torch.testing.assert_close(loss, sum(parts.values()))
    assert not any(part.requires_grad for part in parts.values())


def test_loss_is_float32_under_autocast():
    targets, weights = gaussian_heatmaps(random_keypoints(1, 2, 32, 32, 4), torch.ones(1, 2, dtype=torch.bool),
                                         (8, 8), 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = heatmap_loss([torch.rand(1, 3, 8, 8, dtype=torch.bfloat16)], targets, weights)
    assert loss.dtype == torch.float32


def test_flips():
    width = torch.tensor([64.0, 48.0])
    keypoints = random_keypoints(2, 14, 48, 64, margin=1)
    visible = torch.rand(2, 14) > 0.3
    twice = flip_keypoints(*flip_keypoints(keypoints, visible, width, LSP_PERM), width, LSP_PERM)
    torch.testing.assert_close(twice[0], keypoints)
    assert torch.equal(twice[1], visible)
    once = flip_keypoints(keypoints, visible, width, LSP_PERM)[0]
    assert once[1, 0, 0] == 48 - keypoints[1, 5, 0]  # right ankle of the mirror = mirrored left ankle

    for stride in (4, 8):
        keypoints = random_keypoints(3, 14, 64, 64, margin=1)
        visible = torch.rand(3, 14) > 0.3
        flipped, flipped_visible = flip_keypoints(keypoints, visible, 64, LSP_PERM)
        original, _ = gaussian_heatmaps(keypoints, visible, (64 // stride, 64 // stride), stride)
        mirrored, _ = gaussian_heatmaps(flipped, flipped_visible, (64 // stride, 64 // stride), stride)
        torch.testing.assert_close(flip_heatmaps(mirrored, LSP_PERM), original, rtol=0, atol=1e-5)


def test_a_tiny_pose_machine_fits_two_images():
    torch.manual_seed(0)
    model = create_pose_machine("mobilenetv1_025", num_joints=4, stages=2, output_stride=8, neck_chs=16,
                                stage_chs=16, stage_depth=1)
    images = torch.randn(2, 3, 64, 64)
    targets, weights = gaussian_heatmaps(random_keypoints(2, 4, 64, 64, margin=8), torch.ones(2, 4, dtype=torch.bool),
                                         (8, 8), 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = heatmap_loss(model(images), targets, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
