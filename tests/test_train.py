"""The training loop and the classification API: exact resume, divergence, run folders, DDP, checkpoints."""

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import write_folder
from torch import nn

from lightnets import LightnetsError
from lightnets.cli import main
from lightnets.data import Dataset, ImageBatches, Split
from lightnets.data.dataset import subset
from lightnets.train import (
    ClassificationTask,
    LoopConfig,
    NonFiniteLoss,
    Recipe,
    evaluate,
    fit,
    get_recipe,
    load_checkpoint,
    load_model,
    make_optimizer,
    make_schedule,
    predict,
    train,
)

MEAN, STD = [0.5] * 3, [0.25] * 3


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


def tiny_split(n=48, size=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    # Class-dependent brightness, so a tiny model can learn something.
    images = (torch.rand(n, 3, size, size, generator=g) * 120 + labels.view(-1, 1, 1, 1) * 60).to(torch.uint8)
    return Split(images, labels)


def tiny_net(plain=False):
    """With batch norm and dropout; ``plain`` drops both (they depend on the per-process batch and RNG)."""
    torch.manual_seed(0)
    extra = [] if plain else [nn.BatchNorm2d(8), nn.Dropout(0.1)]
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *extra, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def run_fit(run_dir, net=None, epochs=3, task=None, augment=True, resume=False, batches=None):
    from lightnets.data import Augment

    net = net or tiny_net()
    recipe = Recipe(epochs=epochs, batch_size=8, lr=0.05, warmup=1, ema=0.0)
    batches = batches or ImageBatches(tiny_split(), 8, MEAN, STD, augment=Augment() if augment else None, seed=1)
    opt = make_optimizer(net, recipe)
    cfg = LoopConfig(epochs=epochs, ema=0.9, progress=False, seed=5)
    history = fit(net, task or ClassificationTask(0.1), batches, opt, make_schedule(recipe), cfg, run_dir,
                  evaluate=lambda m: {"val_top1": float(len(m.state_dict()))}, meta={"note": "t"}, resume=resume)
    return net, history


def test_resume_is_bit_exact(tmp_path):
    full, _ = run_fit(tmp_path / "full")

    class Crash(ClassificationTask):
        calls = 0

        def __call__(self, model, batch):
            Crash.calls += 1
            if Crash.calls == 15:  # in the third epoch (6 steps per epoch)
                raise KeyboardInterrupt
            return super().__call__(model, batch)

    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path / "cut", task=Crash(0.1))
    assert json.loads((tmp_path / "cut" / "last.json").read_text())["epoch"] == 2
    resumed, history = run_fit(tmp_path / "cut", net=tiny_net(), resume=True)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert [r["epoch"] for r in history] == [1, 2, 3]
    ema_full = load_checkpoint(tmp_path / "full" / "last")[0]
    ema_cut = load_checkpoint(tmp_path / "cut" / "last")[0]
    assert all(torch.equal(ema_full[k], ema_cut[k]) for k in ema_full)


def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_last_good(tmp_path):
    class Diverge(ClassificationTask):
        calls = 0

        def __call__(self, model, batch):
            loss, metrics = super().__call__(model, batch)
            Diverge.calls += 1
            return (loss * math.nan if Diverge.calls == 9 else loss), metrics

    with pytest.raises(NonFiniteLoss, match=r"loss became nan at epoch 2, step 3 \(global step 9\).*epoch 1"):
        run_fit(tmp_path / "run", task=Diverge())
    weights, meta = load_checkpoint(tmp_path / "run" / "last")
    assert meta["epoch"] == 1 and all(torch.isfinite(w).all() for w in weights.values())
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_time_budget_stops_early_with_the_schedule_completed(tmp_path):
    net = tiny_net()
    recipe = Recipe(epochs=50, batch_size=8, lr=0.05, schedule="onecycle")
    opt = make_optimizer(net, recipe)
    cfg = LoopConfig(epochs=50, time_budget=1e-9, progress=False)
    batches = ImageBatches(tiny_split(), 8, MEAN, STD)
    history = fit(net, ClassificationTask(), batches, opt, make_schedule(recipe), cfg, tmp_path)
    assert len(history) == 1 and history[0]["step"] == 1 and history[0]["budget_stop"]
    assert opt.param_groups[0]["lr"] == 0.0  # progress was already 1: the schedule's end


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        batches = ImageBatches(tiny_split(), 8, MEAN, STD, seed=1, rank=rank, world_size=world)
        net, _ = run_fit(out, net=tiny_net(plain=True), epochs=2, batches=batches)
        if rank == 0:
            torch.save(net.state_dict(), out / "ddp.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_processes_match_one_at_the_same_global_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "ddp").mkdir()
    mp.spawn(_ddp_worker, args=(2, port, tmp_path / "ddp"), nprocs=2, join=True)
    single, _ = run_fit(tmp_path / "one", net=tiny_net(plain=True), epochs=2,
                        batches=ImageBatches(tiny_split(), 8, MEAN, STD, seed=1))
    ddp = torch.load(tmp_path / "ddp" / "ddp.pt")
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)


def tiny_dataset():
    return Dataset(tiny_split(48, 32), tiny_split(12, 32, seed=1), ["a", "b", "c"], "tiny")


def test_train_api_writes_a_run_folder_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    result = train("mobilenetv1_025_cifar", tiny_dataset(), "fast", out=out, epochs=2, warmup=0.5, batch_size=16,
                   progress=False)
    assert {"config.json", "metrics.jsonl", "best.json", "best.safetensors", "last.json", "last.safetensors",
            "state.safetensors", "confusion.txt"} <= {p.name for p in out.iterdir()}
    assert len(result.history) == 2 and result.test.count == 12
    meta = json.loads((out / "best.json").read_text())
    assert meta["model"] == "mobilenetv1_025_cifar" and meta["classes"] == ["a", "b", "c"]
    assert meta["recipe"]["opt"] == "sgd" and len(meta["mean"]) == 3
    with pytest.raises(LightnetsError, match="already exists .* --exist-ok"):
        train("mobilenetv1_025_cifar", tiny_dataset(), out=out, epochs=2, warmup=0.5, progress=False)
    again = train("mobilenetv1_025_cifar", tiny_dataset(), out=out, epochs=1, warmup=0.5, batch_size=16,
                  exist_ok=True, progress=False)
    assert len(again.history) == 1
    model = load_model(out)
    assert model.checkpoint_meta["num_classes"] == 3 and not model.training


def test_train_subset_is_class_balanced_seeded_and_kept_on_resume(tmp_path):
    data = Dataset(tiny_split(60, 32), tiny_split(12, 32, seed=1), ["a", "b", "c"], "tiny")
    picked = subset(data.train, 30, seed=4)
    assert len(picked) == 30 and picked.labels.bincount().tolist() == [10, 10, 10]
    assert torch.equal(picked.images, subset(data.train, 30, seed=4).images)
    assert not torch.equal(picked.images, subset(data.train, 30, seed=5).images)
    out = tmp_path / "run"
    result = train("mobilenetv1_025_cifar", data, "fast", out=out, train_subset=24, epochs=1, warmup=0.5,
                   batch_size=8, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["train_subset"] == 24 and config["train_images"] == 24 and result.test.count == 12
    assert result.history[-1]["step"] == 3  # 24 images in batches of 8
    with pytest.raises(LightnetsError, match="--train-subset must be between 1 and the 60 training images"):
        train("mobilenetv1_025_cifar", data, out=tmp_path / "bad", train_subset=61, progress=False)


def test_schedules_and_weight_decay_groups():
    for name in ("cosine", "onecycle", "step", "constant"):
        f = make_schedule(Recipe(epochs=10, warmup=2, schedule=name))
        assert f(0.0) < 0.01 and abs(f(0.2) - 1) < 1e-6 and 0 <= f(0.99) <= 1
    assert make_schedule(Recipe(epochs=10, schedule="step"))(0.8) == pytest.approx(0.01)
    opt = make_optimizer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), Recipe(wd=0.1))
    decay, no_decay = opt.param_groups
    assert [p.ndim for p in decay["params"]] == [4] and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
    assert get_recipe("source_wd").wd == 1e-3 and get_recipe("source").opt == "adam"
    assert get_recipe("fast", amp="none").amp is None and get_recipe("fast", amp=None).amp == "auto"
    with pytest.raises(LightnetsError, match="unknown recipe 'nope'; choose from source, source_wd, fast"):
        get_recipe("nope")
    with pytest.raises(LightnetsError, match="learning rate must be > 0"):
        get_recipe("fast", lr=-1.0)


def test_cli_train_resume_eval_predict(tmp_path, capsys):
    data = write_folder(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--model", "mobilenetv1_025_cifar", "--data", str(data), "--epochs", "2", "--warmup", "0.5",
            "--batch-size", "8", "--out", str(out), "--quiet", "--threads", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best top-1 %" in printed and f"run folder: {out}" in printed
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert main(["eval", str(out), "--data", str(data), "--out", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "confusion matrix" in printed and (tmp_path / "ev" / "confusion.txt").is_file()
    (data / "test" / "light" / "bad.png").write_bytes(b"garbage")
    assert main(["predict", str(out / "best.safetensors"), str(data / "test"), "--topk", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("%") == 16 and "skipped 1 undecodable image(s)" in printed
    results, skipped = predict(out, [data / "test" / "dark" / "0.png"], topk=1)
    assert results[0][1][0][0] in ("dark", "light") and not skipped
    assert evaluate(out, data).count == 8


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "nowhere"], "data source 'nowhere' does not exist"),
    (["train", "--data", "sample", "--recipe", "slow"], "unknown recipe 'slow'"),
    (["train", "--data", "sample", "--model", "resnet50"], "unknown model 'resnet50'"),
    (["train", "--resume", "nowhere"], "cannot resume nowhere"),
    (["eval", "nowhere", "--data", "sample"], "checkpoint file nowhere.safetensors does not exist"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lightnets: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "sample", "--lr", "0"], "argument --lr: must be a finite number > 0, got '0'"),
    (["train", "--data", "sample", "--train-subset", "0"], "argument --train-subset: must be a positive integer"),
])
def test_cli_refuses_bad_values_on_parse(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]
