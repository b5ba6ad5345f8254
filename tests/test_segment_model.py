"""Segmentation heads, backbone dilation and MobileNetV3's segmentation options, against torchvision's counts."""

import pytest
import torch

from lightnets import create_model
from lightnets.errors import LightnetsError
from lightnets.segment.metrics import IGNORE, confusion_matrix, segmentation_metrics
from lightnets.segment.model import HEADS, create_segmenter


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_lraspp_matches_torchvision_parameter_count():
    # torchvision lraspp_mobilenet_v3_large(num_classes=21): 3,221,538 = features 2,971,952 + head 249,586.
    model = create_segmenter("mobilenetv3_large_100", 21, "lraspp", head_channels=128, output_stride=16)
    assert params(model) == 3_221_538
    assert params(model.head) == 249_586
    assert params(model.head.branch) == 960 * 128 + 2 * 128  # 1x1 conv without bias, then BN
    assert params(model.head.scale) == 960 * 128  # the pooled branch's conv has no bias
    assert params(model.head.low_classifier) == 40 * 21 + 21  # the skip is the 40-channel stride-8 stage


@pytest.mark.parametrize(("variant", "features"), [
    # torchvision mobilenet_v3_*(reduced_tail=True, dilated=True).features, and small's without the reduced tail
    ("mobilenetv3_large_100", 1_620_512), ("mobilenetv3_small_100", 438_704)])
def test_reduced_tail_matches_torchvision(variant, features):
    model = create_model(variant, reduced_tail=True, dilated=True)
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head")) == features
    full = create_model(variant)
    assert model.final_chs == full.final_chs // 2
    assert model.num_features == full.num_features // 2


def test_dilation_keeps_parameters_and_resolution():
    strided = create_model("mobilenetv3_large_100")
    dilated = create_model("mobilenetv3_large_100", dilated=True)
    assert params(strided) == params(dilated)
    assert [f.stride for f in dilated.feature_info] == [2, 4, 8, 16, 16]
    shapes = [tuple(t.shape[-2:]) for t in dilated.forward_stages(torch.randn(1, 3, 96, 128))]
    assert shapes[-1] == (6, 8) and shapes[-2] == (6, 8)
    depthwise = dilated.stages[4][0].depthwise[0]
    assert depthwise.stride == (1, 1) and depthwise.dilation == (2, 2) and depthwise.padding == (4, 4)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_and_logits_at_input_size(output_stride):
    model = create_segmenter("mobilenetv3_small_075", 5, "lraspp", output_stride=output_stride)
    assert model.output_stride == output_stride
    assert model(torch.randn(2, 3, 70, 98)).shape == (2, 5, 70, 98)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_on_other_families(head):
    for backbone in ("efficientnet_b0", "mobilenetv1_100"):
        model = create_segmenter(backbone, 3, head, head_channels=16, width_mult=0.25)
        assert model(torch.randn(1, 3, 64, 80)).shape == (1, 3, 64, 80)


def test_tf_padding_backbone_dilates():
    model = create_segmenter("efficientnet_b0", 3, "lraspp", output_stride=8, tf_padding=True, width_mult=0.25)
    assert model(torch.randn(1, 3, 65, 81)).shape == (1, 3, 65, 81)


def test_config_rebuilds_the_same_model():
    model = create_segmenter("mobilenetv3_small_075", 4, "raspp", head_channels=32, reduced_tail=True,
                             output_stride=8)
    again = create_segmenter(**model.config)
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), again(x))


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(LightnetsError, match="unknown segmentation head 'aspp'"):
        create_segmenter("mobilenetv3_small_075", 3, "aspp")
    with pytest.raises(LightnetsError, match="2x2 pool"):
        create_segmenter("densenet121", 3, "lraspp", output_stride=16)
    with pytest.raises(LightnetsError, match="no stage at stride 64"):
        create_segmenter("mobilenetv3_small_075", 3, low_stride=64)
    with pytest.raises(LightnetsError, match="output_stride must be a power of two"):
        create_segmenter("mobilenetv3_small_075", 3, output_stride=12)


def test_densenet_segments_at_its_own_stride():
    model = create_segmenter("densenet121", 3, "fcn", output_stride=32, head_channels=16)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_metrics_from_a_hand_made_confusion():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, IGNORE]])
    predicted = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    confusion = confusion_matrix(predicted, target, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]  # void left out
    m = segmentation_metrics(confusion, ["a", "b", "c", "d"])
    # IoU a = 1 / (2 + 2 - 1), b = 2 / (2 + 3 - 2), c = 1 / (2 + 1 - 1); d neither labelled nor predicted: no IoU
    assert m["iou_a"] == pytest.approx(100 / 3) and m["iou_b"] == pytest.approx(200 / 3)
    assert m["iou_c"] == pytest.approx(50.0)
    assert m["iou_d"] != m["iou_d"]  # NaN
    assert m["miou"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    assert m["pixel_acc"] == pytest.approx(4 / 6 * 100)
    assert m["mean_acc"] == pytest.approx((50 + 100 + 50) / 3)


def test_lraspp_classifies_before_upsampling_with_the_same_logits(monkeypatch):
    # Figure 10's order (upsample the head's features, then classify) and ours (classify, then upsample the
    # logits) agree because bilinear weights sum to one; ours upsamples num_classes channels, not head_channels.
    torch.manual_seed(0)
    head = create_segmenter("mobilenetv3_small_075", 5, "lraspp", head_channels=32).head.eval()
    low = torch.randn(1, head.low_classifier.in_channels, 12, 16)
    high = torch.randn(1, head.branch[0].in_channels, 6, 8)
    with torch.no_grad():
        features = torch.nn.functional.interpolate(head.branch(high) * head.scale(high), size=(12, 16),
                                                   mode="bilinear", align_corners=False)
        paper_order = head.low_classifier(low) + head.high_classifier(features)
        channels = []
        interpolate = torch.nn.functional.interpolate
        monkeypatch.setattr(torch.nn.functional, "interpolate",
                            lambda x, *a, **k: channels.append(x.shape[1]) or interpolate(x, *a, **k))
        ours = head(low, high)
    assert channels == [5]
    assert torch.allclose(ours, paper_order, atol=1e-5)
