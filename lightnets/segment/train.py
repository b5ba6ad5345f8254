"""Training a segmenter on the shared run skeleton (``lightnets.train.run.Run``) and loop (the other verbs:
``infer.py`` loads, evaluates and predicts, ``deploy.py`` exports, ``latency.py`` times).

Training goes through ``lightnets.train.loop.fit`` with :class:`SegmentationBatches`, :class:`SegmentationTask` and
:func:`evaluation`; checkpoints, resume, progress and ``metrics.jsonl`` are the loop's; ``curves.png`` and the
validation ``confusion.png`` are drawn at the end. Of the recipe, the optimisation fields are used; the
classification augmentation fields are not: segmentation has its own (``SegmentationAugment``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..bench.probe import SpeedChoice
from ..bench.timing import thread_count
from ..detect.files import FileSource
from ..errors import LightnetsError
from ..train.checkpoint import load_checkpoint
from ..train.loop import LoopConfig, rank_and_world
from ..train.plots import plot_confusion, plot_curves
from ..train.recipes import Recipe, get_recipe, make_optimizer, make_schedule
from ..train.run import (
    TRAINING_FILES,
    Run,
    RunResult,
    init_distributed,
    pick_device,
    recorded_source,
    refuse_existing,
    seed_everything,
)
from ..train.speed import settle_speed
from ..weights import data_config
from .augment import SegmentationAugment
from .data import SegmentationCache, SegmentationDataset, median_frequency_weights, read_segmentation_data
from .model import Segmenter, create_segmenter
from .task import SegmentationBatches, SegmentationTask, evaluate, evaluation

DEFAULT_AUGMENT = SegmentationAugment()  # frozen, so one shared default is safe
KIND = "segment"  # a segmentation run's kind, in its config.json
RECIPE_FIELDS_UNUSED = ("crop_pad", "flip", "cutout", "rrc_scale", "tta", "label_smoothing", "compile")
# AdamW with a short warm-up and cosine decay, from scratch on CamVid at CPU budgets (see docs/SEGMENTATION.md).
SEGMENTATION_RECIPE = Recipe(epochs=60, batch_size=8, opt="adamw", lr=2e-3, wd=1e-2, schedule="cosine",
                             warmup=0.5, flip=False, crop_pad=0)
CLASS_WEIGHTS = ("none", "median")
# What ``train_segmenter``'s options not given (None) stand for in a new run; at resume, the recorded values do.
DEFAULTS = {"backbone": "mobilenetv3_large_100", "head": "lraspp", "head_channels": 128, "output_stride": 16,
            "reduced_tail": False, "class_weights": "none", "crop": None, "repeat": 1}
# What a segmentation run writes besides the loop's files (``Run.start(exist_ok=True)`` clears them).
WRITTEN = (*TRAINING_FILES, "val_metrics.jsonl")
SegmentTrainResult = RunResult  # its metrics: the last weights on the validation images


def _dataset(data: str | Path | FileSource | SegmentationDataset, split: str, **readers: Any) -> SegmentationDataset:
    return data if isinstance(data, SegmentationDataset) else read_segmentation_data(data, split, **readers)


def train_segmenter(
    data: str | Path | SegmentationDataset | None,
    backbone: str | None = None,
    *,
    head: str | None = None,
    head_channels: int | None = None,
    output_stride: int | None = None,
    reduced_tail: bool | None = None,
    val_data: str | Path | SegmentationDataset | None = None,
    classes_file: str | None = None,
    palette_file: str | None = None,
    class_weights: str | None = None,
    crop: tuple[int, int] | None = None,
    augment: SegmentationAugment | None = DEFAULT_AUGMENT,
    repeat: int | None = None,
    recipe: str | Recipe = SEGMENTATION_RECIPE,
    out: str | Path | None = None,
    exist_ok: bool = False,
    resume: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    pretrained: bool | str | None = None,
    **overrides: Any,
) -> SegmentTrainResult:
    """Train a segmenter (``head`` on ``backbone``) on the ``train`` split of ``data`` and evaluate it on the
    ``val`` split (or on ``val_data``), whole images, void pixels ignored; the monitor is ``val_miou``.

    ``data`` is a directory or archive of image/mask pairs (see ``read_segmentation_data``; ``classes_file`` and
    ``palette_file`` when the data has none). ``class_weights="median"`` weighs the loss by median-frequency
    balancing over the training masks. ``crop`` ``(H, W)`` is the training crop (default: the images' size) after
    a random rescale of the augmentation (None turns augmentation off); ``repeat`` passes over the images per
    epoch. Options left None take ``DEFAULTS``. ``resume`` continues the run in that folder with the configuration
    it was started with; an option given too must be the recorded one. Precision, layout and CPU threads not given
    are measured on this machine first (``lightnets.train.speed``). ``pretrained`` starts the backbone from weights
    (as ``lightnets.create_model``), whose mean and std then normalise the input.
    """
    run, recorded = None, None
    given = {"backbone": backbone, "head": head, "head_channels": head_channels, "output_stride": output_stride,
             "reduced_tail": reduced_tail, "class_weights": class_weights,
             "crop": list(crop) if crop else None, "repeat": repeat}
    if resume is not None:
        run = Run.resume(resume, KIND)
        run.require_given(("data", "val_data"), data=recorded_source(data), val_data=recorded_source(val_data),
                          pretrained=None if pretrained is None else str(pretrained), **given)
        cfg, rec = run.record, run.recipe(**overrides)
        settings = {k: cfg[k] for k in DEFAULTS}
        data, val_data = cfg["data"], cfg["val_data"]
        classes_file, palette_file = cfg["classes_file"], cfg["palette_file"]
        augment = SegmentationAugment(**cfg["augment"]) if cfg["augment"] else None
        recorded, pretrained = cfg.get("speed"), None  # the checkpoint holds the weights
    elif data is None:
        raise LightnetsError("give the training data (a directory or archive of images and masks), or resume a run")
    else:
        settings = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
        rec = get_recipe(recipe, **overrides)
        refuse_existing(out, exist_ok, WRITTEN)
    if settings["class_weights"] not in CLASS_WEIGHTS:
        raise LightnetsError(f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, "
                             f"got {settings['class_weights']!r}")
    dev = pick_device(device)
    init_distributed(dev)
    readers = {"classes_file": classes_file, "palette_file": palette_file}
    # Both splits from one listing of the source (a .tar.gz is read whole to list it).
    source = data if isinstance(data, SegmentationDataset) else FileSource(data)
    train_set = _dataset(source, "train", **readers)
    val_set = _dataset(val_data if val_data is not None else source, "val", **readers)
    if val_set.classes != train_set.classes:
        raise LightnetsError("the validation data has other classes than the training data: "
                             f"{val_set.classes[:12]} against {train_set.classes[:12]}")
    seed_everything(rec.seed)
    model = create_segmenter(settings["backbone"], len(train_set.classes), settings["head"],
                             head_channels=settings["head_channels"], output_stride=settings["output_stride"],
                             reduced_tail=settings["reduced_tail"], pretrained=pretrained)
    if rec.freeze:
        model.backbone.freeze_stages(rec.freeze)
    if run is not None:
        norm = (run.record["mean"], run.record["std"])
    else:  # the weights' own normalisation, ImageNet's for random ones
        config_in = data_config(model.backbone if pretrained else settings["backbone"])
        norm = (list(config_in.mean), list(config_in.std))
    rank, _ = rank_and_world()
    train_cache = SegmentationCache(train_set, progress=progress and rank == 0)
    crop_hw = tuple(settings["crop"]) if settings["crop"] else tuple(train_cache.images.shape[-2:])
    cache_key = {"segmenter": {k: v for k, v in model.config.items() if k != "num_classes"},
                 "classes": len(train_set.classes)}
    rec, speed = settle_speed(model, rec, (3, *crop_hw), dev, threads=threads, cache_key=cache_key,
                              recorded=recorded, progress=progress)
    with thread_count(speed.threads):
        return _train(model, rec, speed, dev, train_set, val_set, train_cache, settings, crop_hw, norm, augment,
                      data, val_data, readers, out, exist_ok, run, progress)


def _train(model: Segmenter, rec: Recipe, speed: SpeedChoice, dev: torch.device, train_set: SegmentationDataset,
           val_set: SegmentationDataset, train_cache: SegmentationCache, settings: dict[str, Any],
           crop_hw: tuple[int, int], norm: tuple[list[float], list[float]], augment: SegmentationAugment | None,
           data: Any, val_data: Any,
           readers: dict[str, str | None], out: str | Path | None, exist_ok: bool, run: Run | None,
           progress: bool) -> SegmentTrainResult:
    """``train_segmenter`` once the data, the model and the speed are settled (under the chosen thread count)."""
    rank, world = rank_and_world()
    model = model.to(dev, memory_format=torch.channels_last if rec.channels_last else torch.contiguous_format)
    val_cache = SegmentationCache(val_set, progress=progress and rank == 0).to(dev)
    mean, std = norm
    classes = train_set.classes
    weights = median_frequency_weights(train_cache) if settings["class_weights"] == "median" else None
    if augment is not None:
        augment = dataclasses.replace(augment, crop=crop_hw)
    pretrained = getattr(model.backbone, "pretrained", None)
    config = {**settings, "segmenter": model.config, **({"pretrained": pretrained} if pretrained else {}),
              "data": recorded_source(data), "val_data": recorded_source(val_data), **readers, "mean": mean, "std": std,
              "recipe": rec.to_dict(), "augment": dataclasses.asdict(augment) if augment else None,
              "classes": classes, "class_weight_values": weights.tolist() if weights is not None else None,
              "train_images": len(train_set), "val_images": len(val_set), "monitor": "val_miou",
              "device": str(dev), "world_size": world, "threads": torch.get_num_threads(), "speed": speed.to_dict(),
              "torch": torch.__version__, "lightnets": __version__}
    name = f"segment-{settings['head']}-{settings['backbone']}"
    run = run or Run.start(out, name, KIND, config, exist_ok=exist_ok, written=WRITTEN, folder="train")
    batches = SegmentationBatches(train_cache, rec.batch_size, mean, std, augment=augment, device=dev,
                                  seed=rec.seed, rank=rank, world_size=world, repeat=settings["repeat"])
    meta = {"task": "segmentation", "segmenter": model.config, "classes": classes, "colors": train_set.colors.tolist(),
            "mean": mean, "std": std, "input_hw": list(val_cache.images.shape[-2:]), "recipe": rec.to_dict(),
            "speed": speed.to_dict(), "data": config["data"]}
    loop = LoopConfig(epochs=rec.epochs, amp=rec.amp, ema=rec.ema, grad_clip=rec.grad_clip, monitor="val_miou",
                      seed=rec.seed, time_budget=rec.budget_min * 60 if rec.budget_min else None, progress=progress)
    task = SegmentationTask(class_weights=weights, channels_last=bool(rec.channels_last))
    history = run.fit(model, task, batches, make_optimizer(model, rec), make_schedule(rec), loop,
                      evaluate=evaluation(val_cache, classes, mean, std), meta=meta)
    state, _ = load_checkpoint(run.dir / "last")
    model.load_state_dict(state)
    final, confusion = evaluate(model, val_cache, classes, mean, std)
    if rank == 0:
        plot_curves(history, run.dir / "curves.png")
        plot_confusion(confusion, classes, run.dir / "confusion.png", cells="percent")
        run.log("val_metrics.jsonl").append({"epoch": len(history), **final, "confusion": confusion.tolist()})
    return SegmentTrainResult(run.dir, history, final, run.record)
