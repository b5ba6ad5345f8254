"""Training a Convolutional Pose Machine on the shared run skeleton (``lightnets.train.run.Run``) and loop.

Training goes through ``lightnets.train.loop.fit`` with :class:`PoseBatches`, :class:`PoseTask` and
:func:`evaluation`; checkpoints, resume, progress and ``metrics.jsonl`` are the loop's. At the end the last
weights are evaluated once more (PCK per joint, the curve) into ``val_metrics.jsonl`` and ``pck.png``. Of the
recipe, the optimisation fields are used; the classification augmentation fields are not (``PoseAugment``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..bench.timing import thread_count
from ..errors import LightnetsError
from ..train.checkpoint import load_checkpoint
from ..train.loop import LoopConfig, rank_and_world
from ..train.plots import plot_curves
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
from .crops import PoseAugment, PoseCache
from .heatmaps import DEFAULT_SIGMA
from .keypoints import KeypointDataset, flip_permutation, read_keypoint_data
from .metrics import plot_pck_curve
from .model import PoseMachine, create_pose_machine
from .task import PoseBatches, PoseTask, evaluate, evaluation, pck_rows

KIND = "pose"
DEFAULT_AUGMENT = PoseAugment()
RECIPE_FIELDS_UNUSED = ("crop_pad", "flip", "cutout", "rrc_scale", "tta", "label_smoothing", "compile")
# AdamW with a short warm-up and cosine decay; fine-tuning an ImageNet backbone at CPU budgets (docs/POSE.md).
POSE_RECIPE = Recipe(epochs=100, batch_size=16, opt="adamw", lr=1e-3, wd=1e-4, schedule="cosine", warmup=0.5,
                     flip=False, crop_pad=0)
# What ``train_pose``'s options not given (None) stand for in a new run; at resume, the recorded values do.
DEFAULTS = {"backbone": "mobilenetv3_large_100", "stages": 3, "input_size": 128, "output_stride": 8,
            "sigma": DEFAULT_SIGMA, "val_split": None}
WRITTEN = (*TRAINING_FILES, "val_metrics.jsonl", "pck.png")
PoseTrainResult = RunResult  # its metrics: the last weights on the validation records


def split_records(data: KeypointDataset, val_split: tuple[str, str] | None,
                  val_data: KeypointDataset | None) -> tuple[KeypointDataset, KeypointDataset]:
    """``(train, val)``: ``val_data`` when given, else the names in ``val_split`` (first, last) held out."""
    if val_data is not None:
        return data, val_data
    if val_split is None:
        raise LightnetsError("give validation data (val_data) or the image names to hold out "
                             "(val_split, e.g. im09001,im10000)")
    return data.split_by_name(*val_split)


def train_pose(
    data: str | Path | KeypointDataset | None,
    backbone: str | None = None,
    *,
    stages: int | None = None,
    input_size: int | None = None,
    output_stride: int | None = None,
    sigma: float | None = None,
    val_split: tuple[str, str] | None = None,
    val_data: str | Path | KeypointDataset | None = None,
    augment: PoseAugment | None = DEFAULT_AUGMENT,
    flip_test: bool = True,
    recipe: str | Recipe = POSE_RECIPE,
    out: str | Path | None = None,
    exist_ok: bool = False,
    resume: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    pretrained: bool | str | None = None,
    init: str | Path | None = None,
    added: Sequence[KeypointDataset] = (),
    **overrides: Any,
) -> PoseTrainResult:
    """Train a CPM (``stages`` belief stages on ``backbone``) on the person crops of ``data`` (a ``joints.mat``
    layout, a keypoints.json or a COCO keypoints json, see ``read_keypoint_data``) and report PCK on the held-out
    records (``val_split`` names or ``val_data``); the monitor is ``val_pck`` (PCK@0.2, %).

    Crops are ``input_size`` px squares around each person (``person_box``) with CPM's augmentation (``augment``;
    None: plain crops); targets are Gaussians of ``sigma`` output px at ``output_stride``. ``flip_test`` averages
    the maps of each validation crop and its mirror in the final evaluation (the per-epoch ones, which
    pick ``best``, skip it to halve their cost). Options left None take ``DEFAULTS``; ``resume`` continues the
    run in that folder with its recorded configuration. ``pretrained`` starts the backbone from weights (as
    ``lightnets.create_model``), whose mean and std then normalise the input; ``init`` starts every weight from a
    pose checkpoint of the same architecture instead (bootstrapping retrains its detector so). ``added`` are
    further labelled records trained on with the training split (bootstrapping's new labels); such a run cannot
    be resumed, as its records are not all in files.
    """
    run, recorded = None, None
    given = {"backbone": backbone, "stages": stages, "input_size": input_size, "output_stride": output_stride,
             "sigma": sigma, "val_split": list(val_split) if val_split else None}
    if resume is not None:
        run = Run.resume(resume, KIND)
        if run.record.get("added"):
            raise LightnetsError(f"{resume} trained on added labels (a bootstrapping round) and cannot be resumed; "
                                 "run the round again")
        run.require_given(("data", "val_data"), data=recorded_source(data), val_data=recorded_source(val_data),
                          pretrained=None if pretrained is None else str(pretrained), **given)
        cfg, rec = run.record, run.recipe(**overrides)
        settings = {k: cfg[k] for k in DEFAULTS}
        data, val_data, flip_test = cfg["data"], cfg["val_data"], cfg["flip_test"]
        augment = PoseAugment(**cfg["augment"]) if cfg["augment"] else None
        recorded, pretrained = cfg.get("speed"), None  # the checkpoint holds the weights
    elif data is None:
        raise LightnetsError("give the training data (joints.mat + images, keypoints.json or COCO keypoints), "
                             "or resume a run")
    else:
        settings = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
        rec = get_recipe(recipe, **overrides)
        refuse_existing(out, exist_ok, WRITTEN)
    dev = pick_device(device)
    init_distributed(dev)
    records = data if isinstance(data, KeypointDataset) else read_keypoint_data(data)
    other = val_data if isinstance(val_data, KeypointDataset) or val_data is None else read_keypoint_data(val_data)
    train_set, val_set = split_records(records, settings["val_split"], other)
    if val_set.joint_names != train_set.joint_names:
        raise LightnetsError(f"the validation data has other joints than the training data: {val_set.joint_names} "
                             f"against {train_set.joint_names}")
    seed_everything(rec.seed)
    if init is not None and run is None:
        model, norm = _initialised(init, given, settings, train_set.joint_names)
    else:
        model = create_pose_machine(settings["backbone"], len(train_set.joint_names), stages=settings["stages"],
                                    output_stride=settings["output_stride"], pretrained=pretrained)
        norm = (run.record["mean"], run.record["std"]) if run else (list(model.data_config.mean),
                                                                     list(model.data_config.std))
    if rec.freeze:
        model.backbone.freeze_stages(rec.freeze)
    size = settings["input_size"]
    rank, world = rank_and_world()
    show = progress and rank == 0
    train_cache = PoseCache(train_set, size, progress=show)
    if added:
        train_cache = PoseCache.join([train_cache, *(PoseCache(a, size, progress=show) for a in added)])
    val_cache = PoseCache(val_set, size, progress=show).to(dev)
    rec, speed = settle_speed(model, rec, (3, size, size), dev, threads=threads, recorded=recorded,
                              cache_key={"pose_machine": model.config}, progress=progress)
    model = model.to(dev, memory_format=torch.channels_last if rec.channels_last else torch.contiguous_format)
    flip_perm = flip_permutation(train_set.flip_pairs, len(train_set.joint_names))
    mean, std = norm
    pretrained_name = getattr(model.backbone, "pretrained", None)
    config = {**settings, "pose_machine": model.config, **({"pretrained": pretrained_name} if pretrained_name else {}),
              "data": recorded_source(data), "val_data": recorded_source(val_data), "mean": mean, "std": std,
              "recipe": rec.to_dict(), "augment": dataclasses.asdict(augment) if augment else None,
              "flip_test": flip_test, "joint_names": train_set.joint_names,
              "flip_pairs": [list(p) for p in train_set.flip_pairs], "limbs": [list(p) for p in train_set.limbs],
              "train_records": len(train_cache), "val_records": len(val_set),
              **({"init": str(init)} if init is not None else {}),
              **({"added": [{"source": str(a.source.path), "records": len(a)} for a in added]}
                 if added else {}), "skipped": records.skipped,
              "monitor": "val_pck", "device": str(dev), "world_size": world, "speed": speed.to_dict(),
              "torch": torch.__version__, "lightnets": __version__}
    run = run or Run.start(out, f"pose-cpm{settings['stages']}-{settings['backbone']}", KIND, config,
                           exist_ok=exist_ok, written=WRITTEN, folder="train")
    meta = {"task": "pose", "pose_machine": model.config, "joint_names": train_set.joint_names,
            "flip_pairs": config["flip_pairs"], "limbs": config["limbs"], "mean": mean, "std": std,
            "input_size": size, "sigma": settings["sigma"], "recipe": rec.to_dict(), "speed": speed.to_dict(),
            "data": config["data"]}
    test_perm = flip_perm if flip_test else None
    with thread_count(speed.threads):
        batches = PoseBatches(train_cache, rec.batch_size, mean, std, flip_perm, augment=augment, device=dev,
                              seed=rec.seed, rank=rank, world_size=world)
        loop = LoopConfig(epochs=rec.epochs, amp=rec.amp, ema=rec.ema, grad_clip=rec.grad_clip, monitor="val_pck",
                          seed=rec.seed, time_budget=rec.budget_min * 60 if rec.budget_min else None,
                          progress=progress)
        task = PoseTask(stride=settings["output_stride"], sigma=settings["sigma"],
                        channels_last=bool(rec.channels_last))
        history = run.fit(model, task, batches, make_optimizer(model, rec), make_schedule(rec), loop,
                          evaluate=evaluation(val_cache, mean, std), meta=meta)
        state, _ = load_checkpoint(run.dir / "last")
        model.load_state_dict(state)
        report, _ = evaluate(model, val_cache, mean, std, test_perm)
    final = {"pck": 100 * report.at(0.2), "pck_0.1": 100 * report.at(0.1), "auc": 100 * report.auc,
             "mean_px": report.mean_pixel_error}
    if rank == 0:
        plot_curves(history, run.dir / "curves.png")
        plot_pck_curve({f"CPM, {settings['stages']} stages": (report.thresholds, report.overall)},
                       run.dir / "pck.png")
        run.log("val_metrics.jsonl").append({"epoch": len(history), **final,
                                             "per_joint": pck_rows(report, train_set.joint_names),
                                             "curve": [report.thresholds.tolist(), report.overall.tolist()],
                                             "skipped_records": report.skipped_records})
    return PoseTrainResult(run.dir, history, final, run.record)


def _initialised(init: str | Path, given: dict[str, Any], settings: dict[str, Any], joints: list[str]
                 ) -> tuple[PoseMachine, tuple[list[float], list[float]]]:
    """The pose machine of the checkpoint ``init``, to train on from its weights, and the normalisation they were
    trained with. Its architecture and crop size become the run's ``settings``; one given otherwise is refused."""
    from .infer import load_pose_machine

    model = load_pose_machine(init).train()
    meta = model.checkpoint_meta
    own = {"backbone": model.config["backbone"], "stages": model.config["stages"],
           "output_stride": model.config["output_stride"], "input_size": meta["input_size"]}
    conflict = sorted(k for k, v in own.items() if given.get(k) is not None and given[k] != v)
    if conflict:
        raise LightnetsError(f"{init} has another {', '.join(conflict)} than given ("
                             + "; ".join(f"{k}: {own[k]} there, {given[k]} here" for k in conflict) + ")")
    if meta["joint_names"] != joints:
        raise LightnetsError(f"{init} finds other joints than the data labels: {meta['joint_names']} against {joints}")
    settings.update(own)
    return model, (list(meta["mean"]), list(meta["std"]))

