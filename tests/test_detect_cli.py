"""`lightnets detect synth|train|eval|predict|benchmark`: each verb runs end to end on a tiny set; errors are
one line."""

import importlib.util
import json

import pytest

from lightnets.cli import main

pytest.importorskip("faster_coco_eval")


def test_detect_commands_end_to_end(tmp_path, capsys):
    pages, run, drawn = tmp_path / "pages", tmp_path / "run", tmp_path / "drawn"
    assert main(["detect", "synth", str(pages), "--pages", "5", "--width", "96", "--height", "80",
                 "--char-sizes", "10,16"]) == 0
    assert main(["detect", "train", str(pages), "--backbone", "mobilenetv3_small_075", "--input-size", "64",
                 "--epochs", "1", "--batch-size", "2", "--stacks", "2", "--class-agnostic", "--val-split", "0.2",
                 "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "map50" in out and f"run folder: {run}" in out
    meta = json.loads((run / "best.json").read_text())
    assert meta["task"] == "detection" and meta["classes"] == ["object"] and meta["detector"]["stacks"] == 2
    assert (run / "curves.png").is_file() or importlib.util.find_spec("matplotlib") is None

    # resuming keeps the run's configuration; only the epoch count may grow
    assert main(["detect", "train", "--resume", str(run), "--epochs", "2"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["detect", "train", "--resume", str(run), "--epochs", "3", "--batch-size", "4"]) == 2
    assert "only --epochs may grow" in capsys.readouterr().err

    assert main(["detect", "eval", str(run), str(pages)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[:5] == ["f1", "precision", "recall", "map", "map50"]

    assert main(["detect", "predict", str(run), str(pages / "images"), "--out", str(drawn), "--top-k", "7",
                 "--score-threshold", "0"]) == 0
    assert sorted(p.name for p in drawn.iterdir()) == [f"page_0000{i}.png" for i in range(5)]
    assert capsys.readouterr().out.splitlines()[2].split()[-1] == "7"

    # two detectors timed side by side, as a markdown table; the first is the reference of "x first"
    assert main(["detect", "benchmark", "--backbones", "mobilenetv1_025,mobilenetv3_small_075", "--input-size", "64",
                 "--min-time", "0.1", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| backbone | stacks | input |") and "| median ms |" in lines[0]
    first, second = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:4])
    assert first[:3] == ["mobilenetv1_025", "1", "64"] and first[-2] == "1.00"
    assert second[0] == "mobilenetv3_small_075" and float(second[5]) > 0 and float(second[-2]) > 0


@pytest.mark.parametrize("argv,message", [
    (["detect", "train"], "lightnets: error: give the training data"),
    (["detect", "eval", "nowhere", "nowhere"], "lightnets: error: checkpoint file nowhere.safetensors does not exist"),
    (["detect", "synth", "x", "--char-sizes", "3,4"], "lightnets: error: char_sizes must satisfy"),
])
def test_detect_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
