"""Detection metrics: COCO mAP (through faster-coco-eval, or pycocotools) and the Kuzushiji F1.

Both take, per image, the ground truth and the :class:`~lightnets.detect.decode.Detections` as objects with
``boxes`` (``x1, y1, x2, y2`` pixels) and ``labels``; the ground truth can be the dataset's records.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import LightnetsError
from .decode import Detections


class Objects(Protocol):
    boxes: Any
    labels: Any


def _numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def _coco_backend() -> tuple[Any, Any]:
    """``(COCO, COCOeval)`` from faster-coco-eval, else pycocotools."""
    for module, coco, evaluator in (("faster_coco_eval", "COCO", "COCOeval_faster"),
                                    ("pycocotools.cocoeval", None, "COCOeval")):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if coco is None:
            return importlib.import_module("pycocotools.coco").COCO, found.COCOeval
        return getattr(found, coco), getattr(found, evaluator)
    raise LightnetsError('COCO mAP needs faster-coco-eval or pycocotools: pip install "lightnets[detect]"')


def coco_map_available() -> bool:
    """Whether faster-coco-eval or pycocotools is installed (``pip install "lightnets[detect]"``)."""
    try:
        _coco_backend()
    except LightnetsError:
        return False
    return True


COCO_STATS = ("map", "map50", "map75", "map_small", "map_medium", "map_large")


def coco_map(ground_truth: Sequence[Objects], detections: Sequence[Detections], num_classes: int,
             max_detections: int = 100) -> dict[str, float]:
    """COCO box AP averaged over IoU 0.5:0.95 (``map``), at 0.5 and 0.75, and for small/medium/large objects
    (area below 32^2, up to 96^2, above), counting at most ``max_detections`` per image and class (COCO's
    ``maxDets``; raise it for dense pages). A size range without ground truth reads -1, as in COCO's summary.
    """
    if len(ground_truth) != len(detections):
        raise LightnetsError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection lists")
    coco_cls, eval_cls = _coco_backend()
    images, annotations, results = [], [], []
    for image_id, (truth, found) in enumerate(zip(ground_truth, detections, strict=True), start=1):
        images.append({"id": image_id})
        for (x1, y1, x2, y2), label in zip(_numpy(truth.boxes).tolist(), _numpy(truth.labels).tolist(), strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for (x1, y1, x2, y2), label, score in zip(_numpy(found.boxes).tolist(), _numpy(found.labels).tolist(),
                                                  _numpy(found.scores).tolist(), strict=True):
            results.append({"image_id": image_id, "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})
    if not results or not annotations:
        return dict.fromkeys(COCO_STATS, 0.0 if annotations else -1.0)
    categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        truth_api = coco_cls()
        truth_api.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth_api.createIndex()
        evaluator = eval_cls(truth_api, truth_api.loadRes(results), "bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_STATS, evaluator.stats[:6], strict=True)}


def kuzushiji_f1(ground_truth: Sequence[Objects], detections: Sequence[Detections], score_threshold: float = 0.3
                 ) -> dict[str, float]:
    """The Kuzushiji Recognition F1: a detection scoring at least ``score_threshold`` is a true positive when its
    box center falls inside a not yet matched ground-truth box of the same label (detections taken by
    descending score; among several such boxes, the one whose center is nearest). Counts are summed over all
    images before precision, recall and F1 are formed.
    """
    if len(ground_truth) != len(detections):
        raise LightnetsError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection lists")
    true_pos = predicted = actual = 0
    for truth, found in zip(ground_truth, detections, strict=True):
        boxes, labels = _numpy(truth.boxes).reshape(-1, 4), _numpy(truth.labels)
        keep = _numpy(found.scores) >= score_threshold
        order = np.argsort(-_numpy(found.scores)[keep], kind="stable")
        found_boxes, found_labels = _numpy(found.boxes)[keep][order], _numpy(found.labels)[keep][order]
        points = (found_boxes[:, :2] + found_boxes[:, 2:]) / 2
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        free = np.ones(len(boxes), dtype=bool)
        for (x, y), label in zip(points, found_labels, strict=True):
            inside = free & (labels == label) & (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (
                y <= boxes[:, 3])
            if inside.any():
                candidates = np.flatnonzero(inside)
                nearest = candidates[np.argmin(((centers[candidates] - (x, y)) ** 2).sum(1))]
                free[nearest] = False
                true_pos += 1
        predicted += len(points)
        actual += len(boxes)
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / actual if actual else 0.0
    f1 = 2 * true_pos / (predicted + actual) if predicted + actual else 1.0
    return {"f1": f1, "precision": precision, "recall": recall}
