"""Semantic segmentation on any lightnets backbone: LR-ASPP, R-ASPP and FCN heads, image/mask data, mIoU,
training on the shared run skeleton, prediction overlays, ONNX export and latency.

    model = create_segmenter("mobilenetv3_large_100", num_classes=11, head="lraspp")   # output stride 16
    result = train_segmenter("camvid.tar.gz", "mobilenetv3_large_100", budget_min=45)  # train split, val evaluated
    metrics, confusion = evaluate_segmenter(result.run_dir, "camvid.tar.gz")          # miou, iou_<class>, ...
    export_segmenter(result.run_dir, "segmenter.onnx")   # then OnnxSegmenter("segmenter.onnx")(image)
"""

from .augment import SegmentationAugment, normalize_images
from .data import SegmentationCache, SegmentationDataset, median_frequency_weights, read_segmentation_data
from .deploy import OnnxSegmenter, SegmenterExport, evaluate_exported, export_segmenter
from .infer import evaluate_segmenter, load_segmenter, overlay, predict_files, segment_image
from .latency import SegmenterLatency, segmenter_latency
from .metrics import IGNORE, confusion_matrix, segmentation_metrics
from .model import HEADS, FCNHead, LRASPPHead, RASPPHead, Segmenter, create_segmenter
from .task import SegmentationBatches, SegmentationTask, evaluate, evaluation, predict_cache
from .train import SEGMENTATION_RECIPE, train_segmenter

__all__ = [
    "HEADS",
    "IGNORE",
    "SEGMENTATION_RECIPE",
    "FCNHead",
    "LRASPPHead",
    "OnnxSegmenter",
    "RASPPHead",
    "SegmentationAugment",
    "SegmentationBatches",
    "SegmentationCache",
    "SegmentationDataset",
    "SegmentationTask",
    "Segmenter",
    "SegmenterExport",
    "SegmenterLatency",
    "confusion_matrix",
    "create_segmenter",
    "evaluate",
    "evaluate_exported",
    "evaluate_segmenter",
    "evaluation",
    "export_segmenter",
    "load_segmenter",
    "median_frequency_weights",
    "normalize_images",
    "overlay",
    "predict_cache",
    "predict_files",
    "read_segmentation_data",
    "segment_image",
    "segmentation_metrics",
    "segmenter_latency",
    "train_segmenter",
]
