"""Runs keep their promises (issue 23): a seed makes a run reproducible, --resume refuses what it would ignore, no
checkpoint is called good that is not, no data is lost (torn logs, --exist-ok, stale temporary files, drawn
detections); every failure is one line and exit status 2."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import write_folder
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from lightnets import LightnetsError
from lightnets._io import JsonLog
from lightnets.cli import main
from lightnets.data import ImageBatches, Split
from lightnets.detect import create_detector
from lightnets.train import (
    ClassificationTask,
    LoopConfig,
    NonFiniteLoss,
    Recipe,
    Run,
    fit,
    load_checkpoint,
    make_optimizer,
    make_schedule,
)
from lightnets.train.checkpoint import save_checkpoint
from lightnets.train.run import prepare_run_dir

# One thread, fixed precision and layout: nothing is measured, so two runs can be compared bit for bit.
FIXED = ["--threads", "1", "--amp", "none", "--no-channels-last"]
TINY = ["--model", "mobilenetv1_025_cifar", "--epochs", "1", "--batch-size", "8", "--warmup", "0", *FIXED, "--quiet"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path):
    return write_folder(tmp_path / "data")


def one_line_error(capsys, *messages):
    err = capsys.readouterr().err
    assert err.startswith("lightnets: error: ") and err.count("\n") == 1, err
    for message in messages:
        assert message in err, err
    return err


def test_same_seed_same_weights_through_the_cli(tmp_path, data, capsys):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main(["train", *TINY, "--data", str(data), "--seed", seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = (load_file(tmp_path / name / "last.safetensors") for name in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sum(not torch.equal(a[k], c[k]) for k in a) > len(a) // 2


def test_resume_refuses_a_conflicting_option_and_takes_the_recorded_one_given_again(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(data), "--out", str(out)]) == 0
    capsys.readouterr()
    other = write_folder(tmp_path / "data2")
    for option, key in ((["--model", "mobilenetv1_050_cifar"], "model"), (["--data", str(other)], "data"),
                        (["--train-subset", "8"], "train_subset"), (["--val-split", "0.25"], "val_split"),
                        (["--image-size", "16"], "image_size")):
        assert main(["train", "--resume", str(out), "--epochs", "2", *option, "--quiet"]) == 2
        one_line_error(capsys, f"cannot resume {out}: its {key} differ")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    respelled = str(data.parent / "." / data.name) + "/"
    assert main(["train", "--resume", str(out), "--epochs", "2", "--model", "mobilenetv1_025_cifar",
                 "--data", respelled, "--image-size", "32", "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_distill_resume_refuses_another_student_or_data(tmp_path, data, capsys):
    teacher, out = tmp_path / "teacher", tmp_path / "student"
    assert main(["train", *TINY, "--data", str(data), "--out", str(teacher)]) == 0
    student = ["--student", "mobilenetv1_025_cifar", "--teacher", str(teacher), "--data", str(data)]
    assert main(["distill", *student, *TINY[2:], "--out", str(out)]) == 0
    capsys.readouterr()
    for option, key in ((["--student", "mobilenetv1_050_cifar"], "model"),
                        (["--data", str(write_folder(tmp_path / "other"))], "data")):
        assert main(["distill", "--resume", str(out), "--epochs", "2", *option, "--quiet"]) == 2
        one_line_error(capsys, f"cannot resume {out}: its {key} differ")
    assert main(["distill", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0


def test_detect_resume_refuses_a_conflicting_option(tmp_path, capsys):
    pages, out = tmp_path / "pages", tmp_path / "run"
    assert main(["detect", "synth", str(pages), "--pages", "4", "--width", "64", "--height", "64",
                 "--char-sizes", "10,16"]) == 0
    train = ["detect", "train", str(pages), "--backbone", "mobilenetv1_025", "--input-size", "32", "--epochs", "1",
             "--batch-size", "2", "--val-split", "0.25", "--class-agnostic", *FIXED]
    assert main([*train, "--seed", "1", "--out", str(out)]) == 0
    assert main([*train, "--seed", "1", "--out", str(tmp_path / "again")]) == 0
    a, b = (load_file(folder / "last.safetensors") for folder in (out, tmp_path / "again"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    for option, key in ((["--input-size", "64"], "input_size"), (["--backbone", "mobilenetv1_050"], "backbone"),
                        (["--val-split", "0.5"], "val_split"), ([str(tmp_path)], "data")):
        assert main(["detect", "train", *option, "--resume", str(out), "--epochs", "2"]) == 2
        one_line_error(capsys, f"its {key} differ")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_weights_turning_non_finite_stop_before_a_poisoned_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(16) % 2)

    class PoisonStatistics(ClassificationTask):
        calls = 0

        def __call__(self, model, batch):
            PoisonStatistics.calls += 1
            if PoisonStatistics.calls == 3:  # in the second epoch; the loss itself stays finite
                net[1].running_var.fill_(float("inf"))
            return super().__call__(model, batch)

    recipe = Recipe(epochs=3, batch_size=8, lr=0.05)
    with pytest.raises(NonFiniteLoss, match=r"weight or buffer 1\.running_var became non-finite in epoch 2 .*"
                                            r"the last good checkpoint is .*last \(epoch 1\)"):
        fit(net, PoisonStatistics(), ImageBatches(split, 8, [0.5] * 3, [0.25] * 3), make_optimizer(net, recipe),
            make_schedule(recipe), LoopConfig(epochs=3, progress=False), tmp_path)
    weights, meta = load_checkpoint(tmp_path / "last")
    assert meta["epoch"] == 1 and all(torch.isfinite(w).all() for w in weights.values())
    state = load_file(tmp_path / "state.safetensors")
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_a_torn_metrics_line_is_trimmed_and_resume_continues(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(data), "--out", str(out)]) == 0
    metrics = out / "metrics.jsonl"
    whole = metrics.read_bytes()
    with metrics.open("ab") as f:  # what a full disk leaves of the next epoch's line
        f.write(b'{"epoch": 2, "step": 8, "lr": 0.0')
    assert [r["epoch"] for r in JsonLog(metrics).read()] == [1] and metrics.read_bytes() == whole
    with metrics.open("ab") as f:
        f.write(b'{"epoch": 2, "st')
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2]
    metrics.write_text('{"epoch": 1}\n{"epo\n{"epoch": 2}\n')  # not torn: damaged within
    with pytest.raises(LightnetsError, match="metrics.jsonl line 2 is not valid JSON"):
        JsonLog(metrics).read()


def test_exist_ok_clears_only_a_run_folder_and_names_what_it_removed(tmp_path, data, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"name": "my project"}')
    (mine / "metrics.jsonl").write_text('{"loss": 1}\n')
    assert main(["train", *TINY, "--data", str(data), "--out", str(mine), "--exist-ok"]) == 2
    one_line_error(capsys, "--exist-ok clears only a lightnets run folder")
    assert (mine / "config.json").read_text() == '{"name": "my project"}' and (mine / "metrics.jsonl").is_file()

    run = tmp_path / "run"
    Run.start(run, "net", "train", {})
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("the user's own")
    capsys.readouterr()
    Run.start(run, "net", "train", {}, exist_ok=True)
    assert "--exist-ok: removed metrics.jsonl, config.json of the earlier run" in capsys.readouterr().err
    assert not (run / "metrics.jsonl").exists() and (run / "notes.txt").read_text() == "the user's own"

    # a kind that records no config.json (specialists): its own files and run folders are its layout
    specialists = tmp_path / "specialists"
    Run.start(specialists / "specialist-0", "net", "train", {})
    (specialists / "specialists.json").write_text("{}")
    prepare_run_dir(specialists, "net", True, written=("specialists.json",))
    assert not (specialists / "specialists.json").exists() and (specialists / "specialist-0").is_dir()
    (specialists / "holiday.jpg").write_bytes(b"...")
    with pytest.raises(LightnetsError, match="--exist-ok clears only a lightnets run folder"):
        prepare_run_dir(specialists, "net", True, written=("specialists.json",))


def test_stale_temporary_files_are_removed_when_a_run_starts_or_resumes(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that is gone, as after a kill -9 mid-write
    run = tmp_path / "run"
    Run.start(run, "net", "train", {})
    stale = [f".last.safetensors.tmp{gone.pid}.0", f".state.safetensors.tmp{gone.pid}.12"]
    kept = [f".last.json.tmp{os.getpid()}.0",  # a live process's write in progress
            f"last.safetensors.tmp{gone.pid}.0", f".notes.tmp{gone.pid}", f".x.tmp{gone.pid}.1.bak", "notes.txt"]
    for name in stale + kept:
        (run / name).write_text("partial")
    Run.resume(run, "train")
    assert sorted(p.name for p in run.iterdir()) == sorted(kept + ["config.json"])
    for name in stale:
        (run / name).write_text("partial")
    Run.start(run, "net", "train", {}, exist_ok=True)
    assert not any((run / name).exists() for name in stale) and all((run / name).exists() for name in kept)


def test_detect_predict_never_overwrites_inputs_and_keeps_names_apart(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_detector("mobilenetv1_025", 1)
    meta = {"task": "detection", "detector": model.config, "classes": ["object"], "input_size": 32, "top_k": 5}
    save_checkpoint(tmp_path / "det", model.state_dict(), meta)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, name in ((first, "a.png"), (first, "b.jpg"), (first, "b.png"), (second, "a.png")):
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (40, 30), (len(name) * 20, 90, 10)).save(folder / name)
    before = {p: p.read_bytes() for p in (*first.iterdir(), *second.iterdir())}
    for out in (first, second):
        assert main(["detect", "predict", str(tmp_path / "det.json"), str(first), str(second), "--out", str(out)]) == 2
        one_line_error(capsys, "would overwrite the input image")
    assert {p: p.read_bytes() for p in (*first.iterdir(), *second.iterdir())} == before
    drawn = tmp_path / "drawn"
    assert main(["detect", "predict", str(tmp_path / "det.json"), str(first), str(second), "--out", str(drawn)]) == 0
    assert sorted(p.name for p in drawn.iterdir()) == ["a-2.png", "a.png", "b-2.png", "b.png"]


def test_detect_predict_names_an_image_it_cannot_decode(tmp_path, capsys):
    model = create_detector("mobilenetv1_025", 1)
    meta = {"task": "detection", "detector": model.config, "classes": ["object"], "input_size": 32, "top_k": 5}
    save_checkpoint(tmp_path / "det", model.state_dict(), meta)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["detect", "predict", str(tmp_path / "det.json"), str(tmp_path / "broken.png"),
                 "--out", str(tmp_path / "drawn")]) == 2
    one_line_error(capsys, "cannot decode image")


@pytest.mark.parametrize("command", [["predict", "ckpt", "img.png"], ["eval", "ckpt"], ["detect", "train", "pages"],
                                     ["detect", "predict", "ckpt", "img.png"], ["lift", "eval", "ckpt"]])
def test_an_unknown_device_is_refused_on_parse(capsys, command):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--device", "bogus"])
    assert exited.value.code == 2 and "unknown device 'bogus'" in capsys.readouterr().err.splitlines()[-1]
