"""Training RepNet on the shared run skeleton (``lightnets.train.run.Run``) and loop (``lightnets.train.loop.fit``).

Weak supervision as the paper: the generator sees only 2D poses; the critic sees 3D poses of the training
subjects drawn independently of them, so that no 2D pose is ever paired with its own 3D. One optimizer step updates
both sides (a Wasserstein critic with gradient penalty, and the generator and camera network against it); the
critic's weights are frozen inside the generator's adversarial term and the generator's output is detached inside
the critic's, so each side follows only its own loss, as two optimizers alternating 1:1 would (the authors' code
alternates one critic and one generator step per batch). Adam with β = (0.5, 0.9) as WGAN-GP and the authors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .._version import __version__
from ..bench.timing import thread_count
from ..errors import LightnetsError
from ..train.loop import Evaluate, LoopConfig
from ..train.plots import plot_curves
from ..train.recipes import Recipe, get_recipe, make_optimizer, make_schedule
from ..train.run import Run, RunResult, pick_device, refuse_existing, seed_everything
from ..train.speed import settle_speed
from .data import INPUTS, TEST_SUBJECTS, TRAIN_SUBJECTS, PoseSet, normalize_2d, read_h36m
from .metrics import lifting_metrics
from .model import RepNet, create_lifter, in_camera_frame
from .skeleton import JOINTS, torso_frame

KIND = "lift"
BETAS = (0.5, 0.9)
GRADIENT_PENALTY = 10.0
# The recipe fields lifting does not use (image augmentation and layout, TTA, label smoothing, compile).
RECIPE_FIELDS_UNUSED = ("crop_pad", "flip", "cutout", "rrc_scale", "tta", "label_smoothing", "compile",
                        "channels_last", "freeze")
LIFT_RECIPE = Recipe(epochs=20, batch_size=256, opt="adam", lr=1e-3, wd=0.0, schedule="cosine", warmup=0.0,
                     flip=False, crop_pad=0)
EVAL_EVERY = 8  # the per-epoch evaluation uses every 8th test row; `lightnets lift eval` uses them all


CRITIC_FRAMES = ("camera", "torso")


def _centred(pose3d: np.ndarray, frame: str = "camera") -> torch.Tensor:
    """3D poses in metres, centred on their mean joint like the normalised 2D, for the critic: as each training
    camera sees them (``frame`` "camera"), or each turned into its own torso's frame ("torso", ``torso_frame``)."""
    pose = torch.as_tensor(pose3d, dtype=torch.float32) / 1000
    if frame == "torso":
        pose = torso_frame(pose)
    return pose - pose.mean(dim=1, keepdim=True)


class LiftBatches:
    """Each epoch: every training 2D pose once (shuffled), each batch beside as many 3D poses drawn at random from
    the 3D pool; both orders are functions of (seed, epoch) alone, so resume is exact."""

    def __init__(self, train: PoseSet, pool: PoseSet, batch_size: int, seed: int, device: torch.device,
                 critic_frame: str = "camera") -> None:
        self.inputs = normalize_2d(torch.as_tensor(train.pose2d)).to(device)
        self.real = _centred(pool.pose3d, critic_frame).to(device)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.steps_per_epoch = len(self.inputs) // batch_size
        if self.steps_per_epoch < 1:
            raise LightnetsError(f"{len(self.inputs)} training poses are fewer than one batch of {batch_size}")

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.inputs), generator=g)
        drawn = torch.randint(len(self.real), (self.steps_per_epoch * self.batch_size,), generator=g)
        for i in range(self.steps_per_epoch):
            rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield {"pose2d": self.inputs[order[rows].to(self.device)], "real": self.real[drawn[rows].to(self.device)]}


LOSS_NORMS = ("frobenius", "l1")
# The authors' code weights the reprojection error of the neck and the head by 0.1: detectors trained on MPII
# place them differently from Human3.6M's markers.
REPROJECTION_WEIGHTS = tuple(0.1 if joint in ("Neck", "Head") else 1.0 for joint in JOINTS)


@dataclass
class LiftTask:
    """RepNet's losses: reprojection ‖W − KX‖, camera ‖2/tr(KKᵀ)·KKᵀ − I‖, the Wasserstein term against the
    critic, and the critic's own loss with a gradient penalty (weight 10, as WGAN-GP).

    ``loss_norm`` "frobenius" is the paper's norm (per pose); "l1" is the authors' code: the mean absolute error
    per coordinate weighted per joint (``REPROJECTION_WEIGHTS``), and the sum of absolute values for the camera."""

    camera_loss: bool = True
    loss_norm: str = "frobenius"

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        net: RepNet = getattr(model, "module", model)
        w, real = batch["pose2d"], batch["real"]
        pose3d, k = net(w)
        error = w - (k @ pose3d.transpose(1, 2)).transpose(1, 2)  # (B, 16, 2)
        kk = k @ k.transpose(1, 2)
        trace = kk.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None].clamp_min(1e-8)
        camera_error = (2 / trace * kk - torch.eye(2, device=k.device)).flatten(1)
        if self.loss_norm == "l1":
            weights = torch.tensor(REPROJECTION_WEIGHTS, device=w.device)[:, None]
            reprojection = (error.abs() * weights).mean()  # every pose has 32 coordinates: the mean of means
            camera = camera_error.abs().sum(dim=1).mean()
        else:
            reprojection = error.flatten(1).norm(dim=1).mean()
            camera = camera_error.norm(dim=1).mean()
        frozen = {name: p.detach() for name, p in net.critic.named_parameters()}
        adversarial = -functional_call(net.critic, frozen, (pose3d,)).mean()
        fake = pose3d.detach()
        real_score, fake_score = net.critic(real).mean(), net.critic(fake).mean()
        mix_weight = torch.rand(len(real), 1, 1, device=real.device)
        mix = (mix_weight * real + (1 - mix_weight) * fake).requires_grad_(True)
        grad, = torch.autograd.grad(net.critic(mix).sum(), mix, create_graph=True)
        penalty = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
        critic = fake_score - real_score + GRADIENT_PENALTY * penalty
        generator = reprojection + adversarial + (camera if self.camera_loss else 0)
        return generator + critic, {"rep": reprojection, "cam": camera, "wdist": real_score - fake_score,
                                    "gp": penalty}


@torch.no_grad()
def lift(model: RepNet, pose2d: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """3D poses (N, 16, 3) in mm in the camera frame (the generator's pose turned by its camera's rotation) of 2D
    poses (N, 16, 2) in pixels (any image size: they are normalised first)."""
    model.eval()
    out = []
    for chunk in torch.as_tensor(pose2d, dtype=torch.float32).split(batch_size):
        pose3d, k = model(normalize_2d(chunk.to(next(model.parameters()).device)))
        out.append(in_camera_frame(pose3d, k).cpu() * 1000)
    return torch.cat(out) if out else torch.zeros(0, 16, 3)


def pose_set_metrics(model: RepNet, poses: PoseSet) -> dict[str, float]:
    """``lifting_metrics`` of ``model``'s lifts of every 2D pose of ``poses`` against their 3D."""
    return lifting_metrics(lift(model, poses.pose2d), torch.as_tensor(poses.pose3d), poses.action, poses.action_names)


def evaluation(test: PoseSet) -> Evaluate:
    """The per-epoch evaluation: protocol 1 and 2 on ``test`` (``val_`` keys; monitored: ``val_pck3d``)."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        metrics = pose_set_metrics(model, test)
        return {f"val_{k}": v for k, v in metrics.items() if k in ("p1_mm", "p2_mm", "pck3d", "symmetry_mm")}

    return evaluate


def train_lifter(data: str | Path | None, *, inputs: str = "gt", kcs: bool = True, camera_loss: bool = True,
                 width: int = 1000, blocks: int = 2, shared_trunk: bool = False, loss_norm: str = "frobenius",
                 critic_frame: str = "camera", recipe: str | Recipe = LIFT_RECIPE,
                 out: str | Path | None = None, exist_ok: bool = False, resume: str | Path | None = None,
                 device: str | None = None, threads: int | None = None, progress: bool = True,
                 **overrides: Any) -> RunResult:
    """Train RepNet on Human3.6M (the npz of ``read_h36m``): 2D ``inputs`` ("gt" or "sh") of the training subjects
    S1, S5, S6, S7, S8 for the generator, their 3D poses (unpaired) for the critic; evaluated on S9 and S11.
    ``kcs`` and ``camera_loss`` are the paper's ablations; ``shared_trunk`` and ``loss_norm`` "l1" are the authors'
    released code (see ``RepNet`` and ``LiftTask``). ``critic_frame`` "torso" shows the critic every 3D pose in its
    own torso's frame (the authors align theirs to a template), which leaves the view to the camera network alone.
    ``resume`` continues the run in that folder."""
    recorded = None
    if resume is not None:
        run = Run.resume(resume, KIND)
        cfg = run.record
        rec = run.recipe(**overrides)
        data, inputs, kcs, camera_loss = cfg["data"], cfg["inputs"], cfg["kcs"], cfg["camera_loss"]
        width, blocks = cfg["lifter"]["width"], cfg["lifter"]["blocks"]
        shared_trunk, loss_norm = cfg["lifter"].get("shared_trunk", False), cfg.get("loss_norm", "frobenius")
        critic_frame = cfg.get("critic_frame", "camera")
        recorded = cfg.get("speed")
    else:
        if data is None:
            raise LightnetsError("give the Human3.6M data (--data h36m.npz), or resume a run")
        if inputs not in INPUTS:
            raise LightnetsError(f"unknown 2D inputs {inputs!r}; choose from {', '.join(INPUTS)}")
        if loss_norm not in LOSS_NORMS:
            raise LightnetsError(f"unknown loss norm {loss_norm!r}; choose from {', '.join(LOSS_NORMS)}")
        if critic_frame not in CRITIC_FRAMES:
            raise LightnetsError(f"unknown critic frame {critic_frame!r}; choose from {', '.join(CRITIC_FRAMES)}")
        rec = get_recipe(recipe, **overrides)
        refuse_existing(out, exist_ok)
        run = None
    seed_everything(rec.seed)
    dev = pick_device(device)
    train_set = read_h36m(data, inputs, TRAIN_SUBJECTS)
    test_set = read_h36m(data, inputs, TEST_SUBJECTS)
    model = create_lifter({"width": width, "blocks": blocks, "kcs": kcs, "shared_trunk": shared_trunk})
    rec, speed = settle_speed(model, rec.replace(channels_last=False), (16, 2), dev, threads=threads,
                              cache_key={"lifter": model.config}, recorded=recorded, progress=progress)
    with thread_count(speed.threads):
        model = model.to(dev)
        config = {"data": str(data), "inputs": inputs, "kcs": kcs, "camera_loss": camera_loss, "loss_norm": loss_norm,
                  "critic_frame": critic_frame, "lifter": model.config,
                  "recipe": rec.to_dict(), "train_subjects": list(TRAIN_SUBJECTS), "test_subjects": list(TEST_SUBJECTS),
                  "train_poses": len(train_set), "test_poses": len(test_set),
                  "skipped": {"train": train_set.skipped, "test": test_set.skipped}, "device": str(dev),
                  "threads": torch.get_num_threads(), "speed": speed.to_dict(), "torch": torch.__version__,
                  "lightnets": __version__}
        run = run or Run.start(out, f"repnet-{inputs}", KIND, config, exist_ok=exist_ok)
        batches = LiftBatches(train_set, train_set, rec.batch_size, rec.seed, dev, critic_frame)
        held = test_set.subset(np.arange(0, len(test_set), EVAL_EVERY))
        meta = {"task": "lifting", "lifter": model.config, "inputs": inputs, "recipe": rec.to_dict(),
                "joints": "lightnets", "speed": speed.to_dict()}
        loop = LoopConfig(epochs=rec.epochs, amp=rec.amp, ema=rec.ema, grad_clip=rec.grad_clip, monitor="val_pck3d",
                          seed=rec.seed, time_budget=rec.budget_min * 60 if rec.budget_min else None,
                          progress=progress)
        optimizer = make_optimizer(model, rec, betas=BETAS)
        history = run.fit(model, LiftTask(camera_loss, loss_norm), batches, optimizer, make_schedule(rec), loop,
                          evaluate=evaluation(held), meta=meta)
        metrics = pose_set_metrics(model, test_set)
    plot_curves(history, run.dir / "curves.png")
    return RunResult(run.dir, history, metrics, run.record)
