"""Image classification on top of the shared loop: ``train``, ``evaluate``, ``predict`` and ``load_model``.

Classification is one instance of the loop's contract (see ``loop.py``): ``ClassificationTask`` turns
a batch into cross-entropy and accuracy, ``ImageBatches`` is the batch source, and
``evaluate_split`` is the per-epoch evaluation. Runs that train a classifier differently (distillation,
specialists) pass ``train`` a ``RunSetup``, so they share its data, run folders, checkpoints, resume
and reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._version import __version__
from ..bench.probe import SpeedChoice
from ..bench.timing import thread_count
from ..data import Augment, Dataset, ImageBatches, Split, eval_batches, load_data
from ..data.dataset import subset
from ..deploy.classifier import predict_images
from ..errors import LightnetsError
from ..models import model_info
from ..models.base import autocast_for
from ..weights import create_model, data_config, find_weights, is_weight_path
from .checkpoint import load_checkpoint, load_model
from .loop import LoopConfig, Task, rank_and_world
from .plots import plot_confusion, plot_curves
from .recipes import Recipe, get_recipe, make_optimizer, make_schedule
from .run import Run, init_distributed, pick_device, refuse_existing, seed_everything
from .speed import settle_speed


class ClassificationTask:
    """Cross-entropy (with optional label smoothing) on ``(images, labels)`` batches; reports accuracy in percent."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return loss, {"acc": 100 * (logits.argmax(1) == labels).float().mean()}  # percent, like val_top1


@dataclass
class EvalResult:
    """Top-1/top-5 accuracy (percent), mean loss, per-class accuracy and the confusion matrix (rows: true);
    ``skipped``: the evaluation split's files that could not be decoded and so are not counted."""

    top1: float
    top5: float
    loss: float
    confusion: torch.Tensor
    classes: list[str]
    count: int
    skipped: list[str] = field(default_factory=list)

    @property
    def per_class(self) -> list[float]:
        return (100 * self.confusion.diag() / self.confusion.sum(1).clamp(min=1)).tolist()

    def class_rows(self) -> list[dict[str, str]]:
        support = self.confusion.sum(1).tolist()
        return [{"class": c, "images": str(int(n)), "top-1 %": f"{a:.2f}"}
                for c, n, a in zip(self.classes, support, self.per_class, strict=True)]

    def confusion_text(self) -> str:
        width = max(5, *(len(c) for c in self.classes))
        lines = ["true \\ predicted".ljust(width) + " " + " ".join(c[:6].rjust(6) for c in self.classes)]
        for c, row in zip(self.classes, self.confusion.tolist(), strict=True):
            lines.append(c.ljust(width) + " " + " ".join(str(v).rjust(6) for v in row))
        return "\n".join(lines)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split, classes: list[str], mean: list[float], std: list[float], *,
                   batch_size: int = 500, amp: str | None = None, tta: bool = False,
                   channels_last: bool = True) -> EvalResult:
    """Evaluate ``model`` on ``split``; with several processes each takes a share and the counts are summed."""
    device = next(model.parameters()).device
    rank, world = rank_and_world()
    was_training = model.training
    model.eval()
    n = len(classes)
    confusion = torch.zeros(n, n, dtype=torch.int64, device=device)
    sums = torch.zeros(2, device=device)  # loss sum, top-5 hits
    for x, y in eval_batches(split, batch_size, mean, std, device=device, rank=rank, world_size=world,
                             channels_last=channels_last):
        with autocast_for(device, amp):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        sums[0] += F.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.topk(min(5, n), 1).indices == y[:, None]).any(1).sum()
        confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n).view(n, n)
    if world > 1:
        dist.all_reduce(confusion)
        dist.all_reduce(sums)
    model.train(was_training)
    count = int(confusion.sum())
    if count == 0:
        raise LightnetsError("the evaluation split is empty")
    return EvalResult(100 * float(confusion.diag().sum()) / count, 100 * float(sums[1]) / count,
                      float(sums[0]) / count, confusion.cpu(), classes, count)


@torch.no_grad()
def split_logits(model: nn.Module, split: Split, mean: list[float], std: list[float], *,
                 batch_size: int = 500) -> torch.Tensor:
    """``model``'s float32 logits for every image of ``split``, in order, on the CPU (for analyses
    that need the predictions themselves, not only accuracy). A module without parameters (an exported
    model behind ``lightnets.deploy.OnnxClassifier``) is fed on the CPU."""
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    out = [model(x).float().cpu() for x, _ in eval_batches(split, batch_size, mean, std, device=device)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


class RunSetup:
    """How a classification run starts and learns; this base is plain training (fresh weights, cross-entropy).

    Subclasses change only what differs (distillation: the task; specialists: the starting weights
    and normalisation) and so share all of ``train``: data, run folder, checkpoints, resume, plots.
    ``kind`` (the command that starts such runs) is recorded in ``config.json``, so a run resumes only
    with a setup of its own kind; it also names the default run folder ``runs/KIND/MODEL`` and the key
    under which ``record()`` joins the config and every checkpoint's metadata.
    """

    kind = "train"

    def normalisation(self, dataset: Dataset) -> tuple[list[float], list[float]]:
        """The (mean, std) the model's inputs are standardised with: the training images' own."""
        return dataset.mean_std()

    def build(self, net: nn.Module, dataset: Dataset, rec: Recipe, mean: list[float], std: list[float],
              device: torch.device) -> Task:
        """The loop's task, built before the run folder exists (so bad arguments leave no folder behind);
        may also set ``net``'s starting weights, which happens before the optimizer is made."""
        return ClassificationTask(rec.label_smoothing)

    def record(self) -> dict[str, Any]:
        """What the run folder's config and checkpoints record under ``kind`` (plain training: nothing)."""
        return {}


class FineTune(RunSetup):
    """A run that starts from trained ``weights`` and keeps the normalisation they were trained with (NetAdapt's
    short fine-tunes, specialists); ``start`` puts the weights into the new network."""

    kind = "finetune"

    def __init__(self, weights: dict[str, torch.Tensor], mean: list[float], std: list[float]) -> None:
        self.weights = {k: v.detach().cpu() for k, v in weights.items()}
        self.mean, self.std = mean, std

    def normalisation(self, dataset: Dataset) -> tuple[list[float], list[float]]:
        return self.mean, self.std

    def start(self, net: nn.Module) -> None:
        net.load_state_dict(self.weights)

    def build(self, net: nn.Module, dataset: Dataset, rec: Recipe, mean: list[float], std: list[float],
              device: torch.device) -> Task:
        self.start(net)
        return ClassificationTask(rec.label_smoothing)


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    test: EvalResult
    config: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def summary_rows(self) -> list[dict[str, str]]:
        best = max(self.history, key=lambda r: r.get("val_top1", 0))
        last = self.history[-1]
        return [{
            "model": self.config["model"],
            "epochs": str(last["epoch"]),
            "best top-1 %": f"{best.get('val_top1', 0):.2f}",
            "at epoch": str(best["epoch"]),
            "final top-1 %": f"{self.test.top1:.2f}",
            "top-5 %": f"{self.test.top5:.2f}",
            "test images": str(self.test.count),
            "train min": f"{last['elapsed_s'] / 60:.1f}",
            "img/s": f"{sum(r['train_img_s'] for r in self.history) / len(self.history):.0f}",
        }]


def train(model: str | None = None, data: str | Path | Dataset | None = None,
          recipe: str | Recipe = "fast", *, out: str | Path | None = None, exist_ok: bool = False,
          resume: str | Path | None = None, image_size: int | None = None, val_split: float | None = None,
          train_subset: int | None = None, strict: bool = False, device: str | None = None,
          model_args: dict[str, Any] | None = None, progress: bool = True, setup: RunSetup | None = None,
          threads: int | None = None, pretrained: bool | str | Path | None = None,
          **overrides: Any) -> TrainResult:
    """Train a registered model (default ``vovnet27_slim_cifar``) on a data source (default ``"sample"``) and
    evaluate it; returns the run's history and final test result.

    ``recipe`` is a name from ``RECIPES`` or a ``Recipe``; keyword ``overrides`` replace its fields
    (``epochs=5, lr=0.05``). ``resume`` continues the run in that folder exactly where it stopped,
    with the configuration it was started with (a model, data, image size, validation split, subset or model
    arguments given too must be the recorded ones). The recipe's seed seeds every generator before the model is
    built, so two runs with one seed end with the same weights (on one machine, with the same speed settings).
    ``train_subset`` trains on that many images of the training
    split, class-balanced and seeded by the recipe's seed (the test split stays whole). Under ``torchrun``
    the run uses DistributedDataParallel with ``batch_size`` as the global batch. ``setup`` changes how the
    model starts and learns (``lightnets.distill`` and ``lightnets.specialists`` pass theirs); the default is
    plain training. The recipe's ``amp`` and ``channels_last`` and the CPU ``threads`` are measured on this machine
    unless given (see ``lightnets.train.speed``); the line saying what was chosen is printed with ``progress``.
    ``pretrained`` starts from weights (``True``: the model's default published ones, a tag, or a run folder or
    weights file; see ``lightnets.create_model``) with their mean and std and the options they need; a classifier
    of another size starts fresh. The ``finetune`` recipe suits such runs.
    """
    setup = setup or RunSetup()
    run, recorded = None, None
    if resume is not None:
        run = Run.resume(resume, setup.kind)
        run.require_given(model=model, data=str(data.source) if isinstance(data, Dataset) else data,
                          image_size=image_size, val_split=val_split, train_subset=train_subset,
                          model_args=model_args, pretrained=None if pretrained is None else str(pretrained))
        cfg, rec = run.record, run.recipe(**overrides)
        model, data, image_size, val_split = cfg["model"], cfg["data"], cfg["image_size"], cfg["val_split"]
        train_subset = cfg.get("train_subset")
        model_args = cfg["model_args"]
        recorded = cfg.get("speed")
        pretrained = None  # the checkpoint holds the weights
    else:
        model, data = model or "vovnet27_slim_cifar", "sample" if data is None else data
        rec = get_recipe(recipe, **overrides)
        refuse_existing(out, exist_ok)
    entry = model_info(model)
    if pretrained and not is_weight_path(pretrained):
        find_weights(model, pretrained)  # an unknown tag fails before the data is decoded
    if image_size is not None and image_size < 1:
        raise LightnetsError(f"image size must be a positive number of pixels, got {image_size}")
    image_size = image_size or entry.input_size
    dev = pick_device(device)
    init_distributed(dev)
    rank, world = rank_and_world()
    dataset = data if isinstance(data, Dataset) else load_data(data, image_size, val_split=val_split,
                                                               strict=strict, seed=rec.seed)
    if train_subset is not None:
        dataset = replace(dataset, train=subset(dataset.train, train_subset, rec.seed))
    seed_everything(rec.seed)
    if pretrained and isinstance(setup, FineTune):
        raise LightnetsError("this run starts from its own weights; pretrained= does not apply")
    net = create_model(model, num_classes=len(dataset.classes), pretrained=pretrained or False, **(model_args or {}))
    norm = None
    if pretrained:
        model_args, config = net.model_args, data_config(net)
        norm = (list(config.mean), list(config.std), net.pretrained)
    if rec.freeze:
        net.freeze_stages(rec.freeze)
    cache_key = {"model": model, "model_args": model_args or {}, "num_classes": len(dataset.classes),
                 "compile": rec.compile}
    rec, speed = settle_speed(net, rec, (3, *dataset.image_size), dev, threads=threads, cache_key=cache_key,
                              recorded=recorded, progress=progress)
    with thread_count(speed.threads):
        return _train(net, dataset, rec, speed, setup, dev, model, model_args, image_size, val_split, train_subset,
                      out, exist_ok, run, progress, norm)


def _train(net: nn.Module, dataset: Dataset, rec: Recipe, speed: SpeedChoice, setup: RunSetup, dev: torch.device,
           model: str, model_args: dict[str, Any] | None, image_size: int, val_split: float | None,
           train_subset: int | None, out: str | Path | None, exist_ok: bool, run: Run | None,
           progress: bool, pretrained: tuple[list[float], list[float], str] | None) -> TrainResult:
    """``train`` once the data, the model and the speed are settled (run under the chosen thread count);
    ``pretrained`` is the starting weights' (mean, std, name) when there are such."""
    rank, world = rank_and_world()
    net = net.to(dev, memory_format=torch.channels_last if rec.channels_last else torch.contiguous_format)
    mean, std = pretrained[:2] if pretrained else setup.normalisation(dataset)
    task = setup.build(net, dataset, rec, mean, std, dev)
    record = setup.record()
    record = {setup.kind: record} if record else {}
    if pretrained:
        record["pretrained"] = pretrained[2]
    config = {**record, "model": model, "model_args": model_args or {},
              "data": str(dataset.source), "image_size": image_size, "val_split": val_split,
              "train_subset": train_subset, "recipe": rec.to_dict(),
              "classes": dataset.classes, "mean": mean, "std": std,
              "train_images": len(dataset.train), "test_images": len(dataset.test), "skipped": len(dataset.skipped),
              "device": str(dev), "world_size": world, "threads": torch.get_num_threads(), "speed": speed.to_dict(),
              "torch": torch.__version__, "lightnets": __version__}
    run = run or Run.start(out, model, setup.kind, config, exist_ok=exist_ok)
    run_dir = run.dir
    if rec.compile:
        net.compile()
    batches = ImageBatches(dataset.train, rec.batch_size, mean, std, device=dev, seed=rec.seed, rank=rank,
                           world_size=world, channels_last=rec.channels_last,
                           augment=Augment(rec.crop_pad, rec.flip, rec.cutout, rec.rrc_scale))

    def evaluate(m: nn.Module) -> dict[str, float]:
        r = evaluate_split(m, dataset.test, dataset.classes, mean, std, amp=rec.amp, tta=rec.tta,
                           channels_last=rec.channels_last)
        return {"val_loss": r.loss, "val_top1": r.top1, "val_top5": r.top5}

    meta = {"model": model, "model_args": model_args or {}, "num_classes": len(dataset.classes),
            "classes": dataset.classes, "image_size": image_size, "mean": mean, "std": std,
            "recipe": rec.to_dict(), "speed": speed.to_dict(), "data": str(dataset.source), **record}
    loop = LoopConfig(epochs=rec.epochs, amp=rec.amp, ema=rec.ema, grad_clip=rec.grad_clip, seed=rec.seed,
                      time_budget=rec.budget_min * 60 if rec.budget_min else None, progress=progress)
    history = run.fit(net, task, batches, make_optimizer(net, rec), make_schedule(rec), loop, evaluate=evaluate,
                      meta=meta)
    weights, _ = load_checkpoint(run_dir / "last")
    net.load_state_dict(weights)
    final = evaluate_split(net, dataset.test, dataset.classes, mean, std, amp=rec.amp, tta=rec.tta,
                           channels_last=rec.channels_last)
    if rank == 0:
        plot_curves(history, run_dir / "curves.png")
        plot_confusion(final.confusion, dataset.classes, run_dir / "confusion.png")
        (run_dir / "confusion.txt").write_text(final.confusion_text() + "\n")
    return TrainResult(run_dir, history, final, run.record, dataset.skipped)


def evaluate(checkpoint: str | Path, data: str | Path, *, val_split: float | None = None, tta: bool = False,
             batch_size: int = 500, device: str | None = None, strict: bool = False) -> EvalResult:
    """Top-1, top-5, per-class accuracy and confusion matrix of a checkpoint on a data source's test split."""
    dev = pick_device(device)
    model = load_model(checkpoint, dev).to(memory_format=torch.channels_last)
    meta = model.checkpoint_meta
    dataset = load_data(data, meta["image_size"], val_split=val_split, strict=strict, seed=meta["recipe"]["seed"],
                        evaluation=True)
    missing = sorted(set(dataset.classes) - set(meta["classes"]))
    if missing:
        raise LightnetsError(f"{data} has classes the checkpoint was not trained on: {', '.join(missing)}")
    # Labels follow the data set's class order; map them onto the checkpoint's.
    remap = torch.tensor([meta["classes"].index(c) for c in dataset.classes])
    split = Split(dataset.test.images, remap[dataset.test.labels])
    amp = meta["recipe"].get("amp")
    result = evaluate_split(model, split, meta["classes"], meta["mean"], meta["std"], batch_size=batch_size,
                            amp=amp if dev.type != "cpu" or amp == "bf16" else None, tta=tta)
    result.skipped = dataset.skipped
    return result


def predict(checkpoint: str | Path | nn.Module, inputs: list[str | Path], *, topk: int = 5, batch_size: int = 64,
            device: str | None = None, strict: bool = False) -> tuple[list[tuple[Path, list[tuple[str, float]]]],
                                                                       list[Path]]:
    """Top-k (class, probability) for every image in ``inputs`` (files or folders) of a checkpoint (or a loaded
    model), batched; see ``lightnets.deploy.predict_images``. Returns the predictions and the files that could
    not be decoded (``strict`` raises on the first)."""
    dev = pick_device(device)
    model = checkpoint if isinstance(checkpoint, nn.Module) else load_model(checkpoint, dev)
    return predict_images(model, inputs, topk=topk, batch_size=batch_size, strict=strict)
