"""Training a CenterNet on the shared run skeleton (``lightnets.train.run.Run``) and loop (the other verbs:
``infer.py`` loads, evaluates and predicts, ``latency.py`` times).

Training goes through ``lightnets.train.loop.fit`` with :class:`DetectionBatches`, :class:`DetectionTask` and
:func:`evaluation`; checkpoints, resume, progress and ``metrics.jsonl`` are the loop's, and ``curves.png`` is
drawn at the end. Of the recipe, the optimisation fields are used (epochs, batch size, optimizer, LR, weight
decay, schedule, warm-up, EMA, gradient clipping, amp, time budget, seed); the classification augmentation fields
are not: detection has its own augmentation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..bench.probe import SpeedChoice
from ..bench.timing import thread_count
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..errors import LightnetsError
from ..train.checkpoint import load_checkpoint
from ..train.loop import LoopConfig, rank_and_world
from ..train.plots import plot_curves
from ..train.recipes import Recipe, get_recipe, make_optimizer, make_schedule
from ..train.run import Run, RunResult, init_distributed, pick_device, recorded_source, refuse_existing, seed_everything
from ..train.speed import settle_speed
from .chip_data import ChipBatches, PageCache, chip_tiles, find_negative_chips, page_positives
from .chips import ChipConfig
from .data import DetectionCache, DetectionDataset, read_detection_data
from .metrics import coco_map_available
from .model import CenterNet, create_detector
from .task import DetectionBatches, DetectionTask, evaluation
from .tiles import TileConfig
from .transforms import DetectionAugment

DEFAULT_AUGMENT = DetectionAugment()  # frozen, so one shared default is safe
# AdamW with a short warm-up and cosine decay: CenterNet's own recipe uses Adam; tuned on nothing yet.
# The recipe fields detection does not use (it has its own augmentation, no mirror TTA); every other field is an
# option of `lightnets detect train`.
KIND = "detect"  # a detection run's kind, in its config.json
RECIPE_FIELDS_UNUSED = ("crop_pad", "flip", "cutout", "rrc_scale", "tta", "label_smoothing", "compile")
DETECTION_RECIPE = Recipe(epochs=30, batch_size=16, opt="adamw", lr=2e-3, wd=1e-4, schedule="cosine", warmup=0.5,
                          flip=False, crop_pad=0)
# What ``train_detector``'s options not given (None) stand for in a new run; at resume, the recorded values do.
DEFAULTS = {"backbone": "mobilenetv3_large_100", "val_split": 0.1, "class_agnostic": False, "input_size": 512,
            "stacks": 1, "repeat": 1, "top_k": 100}


def split_pages(dataset: DetectionDataset, val_split: float, seed: int) -> tuple[DetectionDataset, DetectionDataset]:
    """A seeded random ``val_split`` fraction of the pages held out for evaluation (at least one page)."""
    if not 0 < val_split < 1:
        raise LightnetsError(f"val_split must be in (0, 1), got {val_split!r}")
    if len(dataset) < 2:
        raise LightnetsError(f"cannot hold out pages from a data set of {len(dataset)} image(s); give --val-data")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(val_split * len(dataset)))
    return dataset.subset(sorted(order[held:])), dataset.subset(sorted(order[:held]))


DetectTrainResult = RunResult  # its metrics: the last weights on the validation pages


def train_detector(
    data: str | Path | DetectionDataset | None,
    backbone: str | None = None,
    *,
    val_data: str | Path | DetectionDataset | None = None,
    val_split: float | None = None,
    class_agnostic: bool | None = None,
    input_size: int | None = None,
    stacks: int | None = None,
    detector_args: dict[str, Any] | None = None,
    recipe: str | Recipe = DETECTION_RECIPE,
    augment: DetectionAugment | None = DEFAULT_AUGMENT,
    repeat: int | None = None,
    top_k: int | None = None,
    out: str | Path | None = None,
    exist_ok: bool = False,
    resume: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    pretrained: bool | str | None = None,
    chips: ChipConfig | None = None,
    negatives_from: str | Path | None = None,
    negatives_per_page: int = 2,
    min_proposals: int = 10,
    **overrides: Any,
) -> DetectTrainResult:
    """Train a CenterNet on ``backbone`` (any registered model) and evaluate it on the validation pages.

    ``data`` is a COCO or Kuzushiji directory/archive (see ``read_detection_data``); without ``val_data`` a
    ``val_split`` fraction of its pages is held out. ``augment`` (no flip by default; None turns it off) runs on
    the device;
    ``repeat`` passes over the pages per epoch; ``top_k`` bounds detections per image in evaluation (raise it for
    dense pages). The monitored metric is ``val_map50`` when a COCO evaluator is installed, else ``val_f1``.
    Options left None take ``DEFAULTS`` (``mobilenetv3_large_100``, 0.1, not class-agnostic, 512, 1 stack, 1
    repeat, top 100). ``resume`` continues the run in that folder with the configuration it was started with; an
    option given too must be the recorded one. The recipe's seed seeds every generator before the detector is
    built, so a seed makes the run reproducible. Precision, layout and CPU threads not given are measured on this
    machine first (``lightnets.train.speed``). ``pretrained`` starts the backbone from weights (``True``: its
    default published ones, a tag, or a file; see ``lightnets.create_model``); the recipe's ``freeze`` fixes its
    first stages.

    ``chips`` trains on SNIPER chips of full-resolution pages instead of whole letterboxed pages (the input size is
    the chip size) and evaluates tile by tile at the chip scales, which the checkpoint records for ``--tiles
    auto``. ``negatives_from`` (a weak detector trained on positive chips only) adds negative chips: its
    proposals outside the positive chips, pooled into chips holding ``min_proposals`` or more, of which
    ``negatives_per_page`` per page are drawn each epoch.
    """
    run, recorded = None, None
    if resume is not None:
        run = Run.resume(resume, KIND)
        run.require_given(("data", "val_data"), data=recorded_source(data), val_data=recorded_source(val_data),
                          backbone=backbone, val_split=val_split, class_agnostic=class_agnostic,
                          input_size=input_size, stacks=stacks, detector_args=detector_args, repeat=repeat,
                          top_k=top_k, pretrained=None if pretrained is None else str(pretrained))
        cfg, rec = run.record, run.recipe(**overrides)
        data, val_data, val_split = cfg["data"], cfg["val_data"], cfg["val_split"]
        backbone, class_agnostic, input_size = cfg["backbone"], cfg["class_agnostic"], cfg["input_size"]
        stacks, detector_args, repeat, top_k = cfg["stacks"], cfg["detector_args"], cfg["repeat"], cfg["top_k"]
        augment = DetectionAugment(**cfg["augment"]) if cfg["augment"] else None
        chips = ChipConfig(**_chip_fields(cfg["chips"])) if cfg.get("chips") else None
        negatives_from, negatives_per_page = cfg.get("negatives_from"), cfg.get("negatives_per_page", 2)
        min_proposals = cfg.get("min_proposals", 10)
        recorded = cfg.get("speed")
        pretrained = None  # the checkpoint holds the weights
    elif data is None:
        raise LightnetsError("give the training data (a COCO or Kuzushiji directory or archive), or resume a run")
    else:
        given = {"backbone": backbone, "val_split": val_split, "class_agnostic": class_agnostic,
                 "input_size": input_size, "stacks": stacks, "repeat": repeat, "top_k": top_k}
        settled = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
        backbone, val_split, class_agnostic, input_size, stacks, repeat, top_k = settled.values()
        rec = get_recipe(recipe, **overrides)
        refuse_existing(out, exist_ok)
    if chips is not None:
        input_size = chips.size
    dev = pick_device(device)
    init_distributed(dev)
    rank, world = rank_and_world()
    dataset = data if isinstance(data, DetectionDataset) else read_detection_data(data, class_agnostic)
    if val_data is None:
        train_set, val_set = split_pages(dataset, val_split, rec.seed)
    else:
        train_set = dataset
        val_set = val_data if isinstance(val_data, DetectionDataset) else read_detection_data(val_data, class_agnostic)
        if val_set.class_names != train_set.class_names:
            raise LightnetsError("the validation data has other classes than the training data: "
                                 f"{val_set.class_names[:10]} against {train_set.class_names[:10]}")
    seed_everything(rec.seed)
    model = create_detector(backbone, len(dataset.class_names), stacks=stacks, pretrained=pretrained,
                            **(detector_args or {}))
    if rec.freeze:
        model.backbone.freeze_stages(rec.freeze)
    cache_key = {"detector": backbone, "classes": len(dataset.class_names), "stacks": stacks,
                 "detector_args": detector_args or {}}
    rec, speed = settle_speed(model, rec, (3, input_size, input_size), dev, threads=threads, cache_key=cache_key,
                              recorded=recorded, progress=progress)
    chip_setup = None if chips is None else {"chips": chips, "negatives_from": negatives_from,
                                             "negatives_per_page": negatives_per_page, "min_proposals": min_proposals}
    with thread_count(speed.threads):
        return _train_detector(model, rec, speed, dev, dataset, train_set, val_set, val_data, val_split, backbone,
                               stacks, detector_args, class_agnostic, input_size, augment, repeat, top_k, out,
                               exist_ok, run, progress, chip_setup)


def _train_detector(model: CenterNet, rec: Recipe, speed: SpeedChoice, dev: torch.device,
                    dataset: DetectionDataset, train_set: DetectionDataset, val_set: DetectionDataset,
                    val_data: Any, val_split: float, backbone: str, stacks: int, detector_args: dict[str, Any] | None,
                    class_agnostic: bool, input_size: int, augment: DetectionAugment | None, repeat: int, top_k: int,
                    out: str | Path | None, exist_ok: bool, run: Run | None, progress: bool,
                    chip_setup: dict[str, Any] | None) -> DetectTrainResult:
    """``train_detector`` once the data, the model and the speed are settled (under the chosen thread count)."""
    rank, world = rank_and_world()
    model = model.to(dev, memory_format=torch.channels_last if rec.channels_last else torch.contiguous_format)
    show = progress and rank == 0
    tiles = None
    if chip_setup is None:
        train_cache = DetectionCache(train_set, input_size, progress=show)
        val_cache = DetectionCache(val_set, input_size, progress=show).to(dev)
        batches = DetectionBatches(train_cache, rec.batch_size, augment=augment, device=dev, seed=rec.seed,
                                   rank=rank, world_size=world, repeat=repeat)
    else:
        batches, val_cache, tiles = chip_batches(train_set, val_set, chip_setup, rec, augment, dev, show)
    monitor = "val_map50" if coco_map_available() else "val_f1"
    pretrained = getattr(model.backbone, "pretrained", None)
    config = {"backbone": backbone, "stacks": stacks, "detector_args": detector_args or {}, "detector": model.config,
              **({"pretrained": pretrained} if pretrained else {}),
              "data": str(dataset.source.path), "val_data": str(val_set.source.path) if val_data is not None else None,
              "val_split": val_split, "class_agnostic": class_agnostic, "input_size": input_size,
              "recipe": rec.to_dict(), "augment": dataclasses.asdict(augment) if augment else None,
              "repeat": repeat, "top_k": top_k, "classes": dataset.class_names, "monitor": monitor,
              "train_images": len(train_set), "val_images": len(val_set), "skipped": dataset.skipped,
              "device": str(dev), "world_size": world, "threads": torch.get_num_threads(), "speed": speed.to_dict(),
              "torch": torch.__version__, "lightnets": __version__}
    if chip_setup is not None:
        config |= {"chips": dataclasses.asdict(chip_setup["chips"]), "chip_stats": batches.stats(),
                   **{k: str(v) if k == "negatives_from" and v else v for k, v in chip_setup.items() if k != "chips"}}
    run = run or Run.start(out, f"detect-{backbone}", KIND, config, exist_ok=exist_ok, folder="train")
    run_dir = run.dir
    evaluate_epoch = evaluation(val_cache, tiles, top_k=top_k, with_map=monitor == "val_map50")
    meta = {"task": "detection", "detector": model.config, "classes": dataset.class_names,
            "class_agnostic": class_agnostic, "input_size": input_size, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "letterbox": "centered, mean-colour padding", "top_k": top_k, "recipe": rec.to_dict(),
            **({"tiles": dataclasses.asdict(tiles)} if tiles is not None else {}),
            "speed": speed.to_dict(),
            "data": config["data"]}
    loop = LoopConfig(epochs=rec.epochs, amp=rec.amp, ema=rec.ema, grad_clip=rec.grad_clip, monitor=monitor,
                      seed=rec.seed, time_budget=rec.budget_min * 60 if rec.budget_min else None, progress=progress)
    task = DetectionTask(channels_last=bool(rec.channels_last))
    history = run.fit(model, task, batches, make_optimizer(model, rec), make_schedule(rec), loop,
                      evaluate=evaluate_epoch, meta=meta)
    weights, _ = load_checkpoint(run_dir / "last")
    model.load_state_dict(weights)
    final = {k[4:]: v for k, v in evaluate_epoch(model).items()}
    if rank == 0:
        plot_curves(history, run_dir / "curves.png")
    return DetectTrainResult(run_dir, history, final, run.record)


def _chip_fields(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded ChipConfig's fields with its tuples back (JSON keeps lists)."""
    return {**recorded, "scales": tuple(recorded["scales"]), "ranges": tuple(tuple(r) for r in recorded["ranges"])}


def chip_batches(train_set: DetectionDataset, val_set: DetectionDataset, setup: dict[str, Any], rec: Recipe,
                 augment: DetectionAugment | None, dev: torch.device, progress: bool
                 ) -> tuple[ChipBatches, PageCache, TileConfig]:
    """The chip batch source (negatives from ``setup["negatives_from"]`` when given), the full-resolution
    validation pages and the tiling they are evaluated with."""
    from .infer import load_detector

    rank, world = rank_and_world()
    chips = setup["chips"]
    pages = PageCache(train_set, progress=progress)
    positives = page_positives(pages, chips)
    negatives = None
    if setup["negatives_from"]:
        weak = load_detector(setup["negatives_from"], dev)
        negatives = find_negative_chips(weak, pages, chips, positives=positives,
                                        min_proposals=setup["min_proposals"], progress=progress)
    batches = ChipBatches(pages, chips, rec.batch_size, positives=positives, negatives=negatives,
                          negatives_per_page=setup["negatives_per_page"], augment=augment, device=dev, seed=rec.seed,
                          rank=rank, world_size=world)
    return batches, PageCache(val_set, progress=progress), chip_tiles(chips)
