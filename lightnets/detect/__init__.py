"""CenterNet object detection on any lightnets backbone: model, targets, loss, decoding, data, metrics, training.

    model = create_detector("mobilenetv3_large_100", num_classes=1, stacks=2)
    pages = read_coco(synthetic_pages("pages/", 200), class_agnostic=True)
    result = train_detector(pages, "mobilenetv3_large_100", stacks=2, epochs=10)   # through lightnets.train's loop
    evaluate(model, DetectionCache(pages, 512))   # f1, precision, recall, map, map50, ...
    export_detector(result.run_dir, "detector.onnx")   # then OnnxDetector("detector.onnx")(image) on ONNX Runtime
"""

from .data import (
    DetectionBatch,
    DetectionCache,
    DetectionDataset,
    DetectionRecord,
    FileSource,
    read_coco,
    read_detection_data,
    read_kuzushiji,
)
from .decode import Detections, decode
from .deploy import DetectorExport, OnnxDetector, decode_heads, export_detector
from .draw import draw_detections
from .infer import evaluate_detector, load_detector, predict_files
from .latency import detector_latency
from .loss import centernet_loss, focal_loss
from .metrics import coco_map, coco_map_available, kuzushiji_f1
from .model import CenterNet, create_detector
from .synthetic import synthetic_pages
from .targets import build_targets, gaussian_radius
from .task import DetectionBatches, DetectionTask, detect_images, evaluate, evaluation, predict_cache
from .train import DETECTION_RECIPE, split_pages, train_detector
from .transforms import (
    DetectionAugment,
    letterbox_image,
    letterbox_transform,
    network_input,
    to_image_boxes,
    to_input_boxes,
)

__all__ = [
    "DETECTION_RECIPE",
    "CenterNet",
    "DetectionAugment",
    "DetectionBatch",
    "DetectionBatches",
    "DetectionCache",
    "DetectionDataset",
    "DetectionRecord",
    "DetectionTask",
    "Detections",
    "DetectorExport",
    "FileSource",
    "OnnxDetector",
    "build_targets",
    "centernet_loss",
    "coco_map",
    "coco_map_available",
    "create_detector",
    "decode",
    "decode_heads",
    "detect_images",
    "detector_latency",
    "draw_detections",
    "evaluate",
    "evaluate_detector",
    "evaluation",
    "export_detector",
    "focal_loss",
    "gaussian_radius",
    "kuzushiji_f1",
    "letterbox_image",
    "letterbox_transform",
    "load_detector",
    "network_input",
    "predict_cache",
    "predict_files",
    "read_coco",
    "read_detection_data",
    "read_kuzushiji",
    "split_pages",
    "synthetic_pages",
    "to_image_boxes",
    "to_input_boxes",
    "train_detector",
]
