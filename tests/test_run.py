"""The run skeleton every task shares: folder, record, one resume rule, JSONL logs."""

import json

import pytest

from lightnets import LightnetsError
from lightnets._io import JsonLog
from lightnets.bench.machine import cpu_info
from lightnets.train import Run
from lightnets.train.recipes import Recipe


def test_start_writes_the_record_and_exist_ok_clears_only_what_a_run_writes(tmp_path):
    out = tmp_path / "run"
    run = Run.start(out, "net", "search", {"space": "s", "data": "d"}, written=("config.json", "candidates.jsonl"))
    record = json.loads((out / "config.json").read_text())
    assert record["kind"] == "search" and record["space"] == "s" and "started" in record and run.dir == out
    assert record["machine"] == cpu_info().describe()  # a budgeted run's figures belong to the CPU it ran on
    (out / "candidates.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("the user's own file")
    with pytest.raises(LightnetsError, match="already exists and is not empty"):
        Run.start(out, "net", "search", {})
    Run.start(out, "net", "search", {}, exist_ok=True, written=("config.json", "candidates.jsonl"))
    assert not (out / "candidates.jsonl").exists() and (out / "notes.txt").read_text() == "the user's own file"


def test_default_folders_count_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Run.start(None, "net", "train", {}).dir
    second = Run.start(None, "net", "detect", {}, folder="train").dir
    assert (first.as_posix(), second.as_posix()) == ("runs/train/net", "runs/train/net-2")


def test_one_resume_rule(tmp_path):
    out = tmp_path / "run"
    Run.start(out, "net", "train", {"data": "d", "recipe": Recipe(epochs=5).to_dict()})
    run = Run.resume(out, "train")
    assert run.resumed and run.recipe(epochs=8).epochs == 8 and run.recipe().epochs == 5
    for overrides in ({"epochs": 4}, {"lr": 0.5}):
        with pytest.raises(LightnetsError, match="only --epochs may grow"):
            run.recipe(**overrides)
    run.require({"data": "d"})
    with pytest.raises(LightnetsError, match="its data differ"):
        run.require({"data": "other"})
    with pytest.raises(LightnetsError, match="is a train run, not a distill run; resume it with `lightnets train"):
        Run.resume(out, "distill")
    Run.start(tmp_path / "det", "x", "detect", {})
    with pytest.raises(LightnetsError, match="resume it with `lightnets detect train --resume"):
        Run.resume(tmp_path / "det", "train")
    with pytest.raises(LightnetsError, match="no readable config.json"):
        Run.resume(tmp_path / "nothing", "train")
    with pytest.raises(LightnetsError, match="--resume needs --out"):
        Run.resume(None, "search")


def test_json_log_appends_and_keeps(tmp_path):
    log = JsonLog(tmp_path / "log.jsonl")
    assert log.read() == []
    for i in range(3):
        log.append({"epoch": i + 1})
    assert [r["epoch"] for r in log.read()] == [1, 2, 3]
    log.keep(r for r in log.read() if r["epoch"] <= 2)
    assert [r["epoch"] for r in log.read()] == [1, 2]
