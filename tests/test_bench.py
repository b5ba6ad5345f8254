"""Benchmark machinery: timers, backends, results, presets and the command. Timings are never asserted."""

import csv
import importlib.util
import json

import pytest

import lightnets
from lightnets import LightnetsError
from lightnets.bench import (
    BenchResult,
    preset_models,
    result_rows,
    run_benchmark,
    source_rows,
    time_fn,
    time_interleaved,
    write_results,
)
from lightnets.bench.benchmark import pareto_front, plot_accuracy_latency
from lightnets.cli import main

FAST = dict(min_time=0.02, batch_sizes=(1, 4), threads=1)
SMALL = "mobilenetv3_small_075_cifar"


def test_time_fn_and_interleaved_shapes():
    calls = []
    t = time_fn(lambda: calls.append(1), min_time=0.01, warmup=2, min_runs=7)
    assert t.runs >= 7 and len(calls) == t.runs + 2 and 0 <= t.median_ms <= t.p90_ms
    both = time_interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, min_time=0.01, rounds=3)
    assert set(both.timings) == {"a", "b"} and both.baseline == "a" and both.ratios["a"] == 1.0
    with pytest.raises(ValueError):
        time_interleaved({"a": lambda: None}, baseline="c")


def test_benchmark_backends_agree_with_eager():
    backends = ["eager", "channels_last"] + (["onnxruntime"] if importlib.util.find_spec("onnxruntime") else [])
    results = run_benchmark([SMALL], backends=backends, **FAST)
    assert [r.backend for r in results] == backends
    for r in results:
        assert r.status == "ok", r.status
        assert r.params == lightnets.count_params(lightnets.create_model(SMALL)) and r.macs > 0
        assert r.latency_ms > 0 and r.latency_p90_ms >= r.latency_ms and set(r.throughput) == {1, 4}
        assert r.max_abs_diff < 1e-4 and r.top1_agree == 1.0 and r.gflops > 0
    assert results[0].vs_eager == 1.0 and results[0].train_img_s is None


def test_missing_backend_is_skipped_not_an_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    eager, ov = run_benchmark([SMALL], backends=["eager", "openvino"], **FAST)
    assert eager.status == "ok" and ov.latency_ms is None
    assert ov.status == "skipped: openvino is not installed: pip install 'lightnets[openvino]'"
    rows = result_rows([eager, ov])
    assert rows[1]["status"] == ov.status and rows[1]["bs1 ms"] == "-"


def test_unknown_backend_and_bad_batch_are_user_errors(capsys):
    with pytest.raises(LightnetsError, match="unknown backend 'tensorrt'; choose from eager"):
        run_benchmark([SMALL], backends=["tensorrt"])
    with pytest.raises(LightnetsError, match="batch sizes"):
        run_benchmark([SMALL], batch_sizes=[0])
    assert main(["benchmark", "--models", SMALL, "--backends", "eager,tensorrt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightnets: error: unknown backend 'tensorrt'") and err.count("\n") == 1


def test_train_step_and_files(tmp_path):
    (r,) = run_benchmark([SMALL], train=True, train_batch=4, **FAST)
    assert r.train_img_s > 0 and r.train_epoch_s == pytest.approx(50_000 / r.train_img_s)
    records = json.loads(write_results([r], tmp_path / "r.json").read_text())
    expected = {"model", "backend", "status", "threads", "params", "macs", "latency_ms", "latency_p90_ms",
                "vs_eager", "gflops", "throughput_bs1", "throughput_bs4", "max_abs_diff", "top1_agree",
                "train_img_s", "train_epoch_s", "accuracy"}
    assert expected <= set(records[0]) and records[0]["model"] == SMALL
    with write_results([r], tmp_path / "r.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert expected <= set(row) and float(row["train_img_s"]) > 0
    with pytest.raises(LightnetsError, match=r"\.json or \.csv"):
        write_results([r], tmp_path / "r.txt")
    src = source_rows([r])[0]
    assert list(src) == ["model", "backend", "acc %", "train s/epoch", "test bs1 s", "test bs32 s", "params M",
                         "status"]
    assert src["test bs32 s"] == "-"  # batch 32 was not measured


def test_cli_benchmark_writes_json_and_csv(tmp_path, capsys):
    out_json, out_csv = tmp_path / "b.json", tmp_path / "b.csv"
    argv = ["benchmark", "--models", SMALL, "--batch-sizes", "1,2", "--threads", "1", "--min-time", "0.02",
            "--out", str(out_json), "--out", str(out_csv)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert SMALL in out and "img/s bs2" in out and "status" not in out.splitlines()[0]
    assert json.loads(out_json.read_text())[0]["backend"] == "eager" and out_csv.read_text().startswith("model,")


def test_source_preset_comes_from_the_registry():
    names = preset_models("source")
    assert names and all(n.endswith("_cifar") for n in names)
    assert "mobilenetv3_small_100_cifar" in names and "efficientnet_b0_cifar" not in names
    assert {n for n in ("vovnet27_slim_cifar", "vovnet39_cifar", "peleenet_cifar")} & set(lightnets.list_models()) \
        <= set(names)
    with pytest.raises(LightnetsError, match="unknown preset"):
        preset_models("imagenet")


def test_pareto_front_and_plot(tmp_path):
    pts = [(1.0, 80.0), (2.0, 79.0), (3.0, 85.0), (0.5, 70.0), (4.0, 85.0)]
    assert pareto_front(pts) == [(0.5, 70.0), (1.0, 80.0), (3.0, 85.0)]
    pytest.importorskip("matplotlib")
    base = dict(backend="eager", status="ok", device="cpu", threads=1, input_size=32, params=1, macs=1)
    results = [BenchResult(model=f"m{i}", latency_ms=lat, accuracy=acc / 100, **base) for i, (lat, acc) in
               enumerate(pts)]
    path = plot_accuracy_latency(results, tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LightnetsError, match="accuracy"):
        plot_accuracy_latency([BenchResult(model="m", latency_ms=1.0, **base)], tmp_path / "q.png")


def test_matmul_peak_names_each_library():
    peaks = lightnets.bench.matmul_peak_gflops(threads=1, n=64, min_time=0.01)
    assert peaks["torch.mm"] > 0
    if importlib.util.find_spec("onnxruntime"):
        assert peaks["onnxruntime MatMul"] > 0


def test_checkpoint_accuracy_joins_the_table(tmp_path):
    from lightnets.train import save_checkpoint

    model = lightnets.create_model(SMALL)
    meta = {"model": SMALL, "model_args": {}, "num_classes": 10, "classes": [str(i) for i in range(10)],
            "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "metrics": {"val_top1": 91.25}}
    save_checkpoint(tmp_path / "best", model.state_dict(), meta)
    (r,) = run_benchmark([str(tmp_path)], **FAST)
    assert r.accuracy == pytest.approx(0.9125) and r.model == f"{SMALL} ({tmp_path})"
    assert result_rows([r])[0]["acc %"] == "91.25" and source_rows([r])[0]["acc %"] == "91.25"
