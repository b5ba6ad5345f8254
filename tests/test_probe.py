"""Speed chosen by measurement: the capability check, the probe's choice, explicit options, the cache, the
machine facts, `lightnets doctor`, the runtime choice, and the choice recorded by a run and reused on resume."""

import json

import pytest
import torch
from conftest import write_folder
from torch import nn

from lightnets import LightnetsError
from lightnets.bench import machine, probe
from lightnets.bench.machine import CpuInfo
from lightnets.bench.probe import Candidate, SpeedChoice, choose_speed, probe_speed
from lightnets.cli import main

NO_BF16 = CpuInfo("Test CPU without bf16", "x86_64", ("avx2", "fma"), 2)
WITH_BF16 = CpuInfo("Test CPU with bf16", "x86_64", ("avx2", "fma", "avx512f", "avx512_bf16"), 2)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3))


def fake_cpu(monkeypatch, info, cores=2):
    monkeypatch.setattr(probe, "cpu_info", lambda: info)
    monkeypatch.setattr(probe, "usable_cores", lambda: cores)


def fake_timings(monkeypatch, seconds_of):
    """``_measure`` answering ``seconds_of(candidate)`` per step; records the candidates it was asked about."""
    asked = []

    def measure(steps, rounds, sync):
        asked.append(list(steps))
        return {c: seconds_of(c) for c in steps}

    monkeypatch.setattr(probe, "_measure", measure)
    return asked


def test_cpu_flags_decide_native_precisions(monkeypatch):
    assert WITH_BF16.native_bf16 and not NO_BF16.native_bf16
    assert CpuInfo("arm", "aarch64", ("asimd", "bf16", "i8mm"), 4).native_bf16
    assert CpuInfo("x", "x86_64", ("avx512_vnni",), 2).vnni and not NO_BF16.vnni
    fake_cpu(monkeypatch, NO_BF16)
    precisions, notes = probe.native_precisions(torch.device("cpu"))
    assert precisions == [None] and "no bf16 instructions" in notes[0]
    fake_cpu(monkeypatch, WITH_BF16)
    assert probe.native_precisions(torch.device("cpu"))[0] == [None, "bf16"]
    assert probe.thread_options(8) == [8, 4, 2, 1] and probe.thread_options(1) == [1]
    real = machine.cpu_info()
    assert real.cores >= 1 and real.name and set(real.flags) <= set(machine.X86_FLAGS + machine.ARM_FLAGS)


def test_probe_picks_the_fastest_candidate_and_reports_the_others(monkeypatch):
    fake_cpu(monkeypatch, WITH_BF16)
    # bf16 twice as fast; NCHW 10% slower; one thread 1.6x slower.
    asked = fake_timings(monkeypatch, lambda c: (0.5 if c.amp == "bf16" else 1.0) * (1.0 if c.channels_last else 1.1)
                         * (1.6 if c.threads == 1 else 1.0))
    choice = probe_speed(small_net(), (3, 8, 8), 16)
    assert (choice.amp, choice.channels_last, choice.threads, choice.how) == ("bf16", True, 2, "measured")
    assert len(asked[0]) == 4 and len(asked[1]) == 2  # precision x layout at 2 threads, then threads
    assert choice.ratios["fp32"] == pytest.approx(0.5) and choice.ratios["NCHW"] == pytest.approx(1 / 1.1)
    assert choice.ratios["1 thread"] == pytest.approx(1 / 1.6)
    line = choice.line()
    assert line.startswith("auto: bf16, channels_last, 2 threads") and "fp32 0.50x" in line
    # Where bf16 is slower it is not chosen, and on a CPU without bf16 it is not even tried.
    fake_timings(monkeypatch, lambda c: (3.0 if c.amp == "bf16" else 1.0) * (1.0 if c.channels_last else 0.9))
    choice = probe_speed(small_net(), (3, 8, 8), 16)
    assert (choice.amp, choice.channels_last) == (None, False)
    fake_cpu(monkeypatch, NO_BF16)
    asked = fake_timings(monkeypatch, lambda c: 1.0 if c.threads == 1 else 1.5)
    choice = probe_speed(small_net(), (3, 8, 8), 16)
    assert all(c.amp is None for c in asked[0]) and choice.threads == 1
    assert "bf16 not tried: this CPU has no bf16 instructions" in choice.line()


def test_explicit_options_are_not_probed_and_bad_ones_are_refused(monkeypatch):
    fake_cpu(monkeypatch, NO_BF16)
    asked = fake_timings(monkeypatch, lambda c: 1.0)
    choice = probe_speed(small_net(), (3, 8, 8), 16, amp=None, channels_last=False, threads=1)
    assert (choice.how, choice.amp, choice.channels_last, choice.threads) == ("given", None, False, 1) and not asked
    choice = probe_speed(small_net(), (3, 8, 8), 16, amp=None, threads=2)  # only the layout is left to measure
    assert asked[0] == [Candidate(None, True, 2), Candidate(None, False, 2)]
    with pytest.raises(LightnetsError, match="fp16 autocast needs a CUDA device"):
        probe_speed(small_net(), (3, 8, 8), 16, amp="fp16")
    with pytest.raises(LightnetsError, match="threads must be >= 1, got 0"):
        choose_speed(small_net(), (3, 8, 8), 16, threads=0)


def test_bf16_asked_for_on_a_cpu_without_it_is_kept_with_the_measured_slowdown(monkeypatch):
    fake_cpu(monkeypatch, NO_BF16)
    fake_timings(monkeypatch, lambda c: 3.0 if c.amp == "bf16" else 1.0)
    choice = probe_speed(small_net(), (3, 8, 8), 16, amp="bf16", channels_last=True, threads=2)
    assert choice.amp == "bf16" and "emulated bf16 took 3.00x the time of fp32" in choice.line()


def test_real_probe_fits_its_budget_and_leaves_the_model_alone():
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    choice = probe_speed(net, (3, 16, 16), 32, budget_s=2.0)
    assert choice.how == "measured" and choice.probe_s < 4.0 and 2 <= choice.probe_batch <= 32
    assert len(choice.rates) >= 2 and all(r > 0 for r in choice.rates.values())
    assert choice.candidate.label() in choice.rates
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_probe_batch_has_a_floor_where_layout_rankings_hold():
    # A budget no step can meet would give batch 2, where NCHW and channels_last rank the other way round.
    steps = probe._Steps(small_net(), (3, 8, 8), torch.device("cpu"))
    one = Candidate(None, True, 1)
    assert probe._probe_batch(steps, one, 64, 1e-9, lambda: None) == probe.MIN_PROBE_BATCH
    assert probe._probe_batch(steps, one, 8, 1e-9, lambda: None) == 8  # never above the training batch


def test_choice_is_cached_per_machine_and_a_foreign_entry_is_ignored(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, NO_BF16)
    calls = []
    monkeypatch.setattr(probe, "probe_speed", lambda *a, **k: calls.append(1) or SpeedChoice(
        None, True, 2, "measured", {"NCHW": 0.8}, {}, [], 16, 1.0))
    key = {"model": "small", "num_classes": 3}
    first = choose_speed(small_net(), (3, 8, 8), 16, cache_key=key)
    second = choose_speed(small_net(), (3, 8, 8), 16, cache_key=key)
    assert first.how == "measured" and second.how == "cached" and len(calls) == 1
    assert second.ratios == {"NCHW": 0.8} and "cached probe" in second.line()
    choose_speed(small_net(), (3, 8, 8), 32, cache_key=key)  # another batch: another entry
    assert len(calls) == 2
    entries = list((tmp_path / "cache" / "speed").glob("*.json"))
    assert len(entries) == 2
    for path in entries:  # as if written by another torch: ignored, never trusted
        entry = json.loads(path.read_text())
        entry["key"]["machine"]["torch"] = "0.0.1"
        path.write_text(json.dumps(entry))
    assert choose_speed(small_net(), (3, 8, 8), 16, cache_key=key).how == "measured" and len(calls) == 3
    entries[0].write_text("not json")
    choose_speed(small_net(), (3, 8, 8), 16, cache_key=key)


def test_train_records_the_choice_and_resume_reuses_it(tmp_path, monkeypatch, capsys):
    from lightnets.train import train

    fake_cpu(monkeypatch, NO_BF16)
    fake_timings(monkeypatch, lambda c: (1.0 if c.channels_last else 0.5) * (1.0 if c.threads == 1 else 2.0))
    out = tmp_path / "run"
    data = write_folder(tmp_path / "data")
    train("mobilenetv1_025_cifar", data, "fast", out=out, epochs=1, warmup=0, batch_size=16)
    assert "auto: fp32, NCHW, 1 thread" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["amp"] is None and config["recipe"]["channels_last"] is False
    assert config["speed"]["threads"] == 1 and config["threads"] == 1 and config["speed"]["how"] == "measured"
    assert json.loads((out / "best.json").read_text())["speed"]["threads"] == 1
    asked = fake_timings(monkeypatch, lambda c: 1.0)
    train(resume=out, epochs=2)
    assert not asked and "recorded: fp32, NCHW, 1 thread" in capsys.readouterr().err
    # Given on the command line, nothing is measured.
    argv = ["train", "--model", "mobilenetv1_025_cifar", "--data", str(data), "--epochs", "1", "--warmup", "0",
            "--batch-size", "16", "--amp", "none", "--channels-last", "--threads", "1",
            "--out", str(tmp_path / "given"), "--quiet"]
    assert main(argv) == 0 and not asked
    given = json.loads((tmp_path / "given" / "config.json").read_text())["speed"]
    assert (given["how"], given["amp"], given["channels_last"], given["threads"]) == ("given", None, True, 1)


def test_doctor_lists_the_machine_and_measures(capsys, monkeypatch):
    assert main(["doctor", "--no-measure"]) == 0
    printed = capsys.readouterr().out
    assert machine.cpu_info().name in printed and "native bf16" in printed and "torch" in printed
    from lightnets.bench.doctor import training_table

    rows = training_table("mobilenetv1_025_cifar", 8, rounds=1)
    assert len(rows) == 4 * len(probe.thread_options(machine.usable_cores()))
    assert rows[0][""] == "fastest" and rows[0]["x fastest"] == "1.00"
    assert {r["precision"].split()[0] for r in rows} == {"fp32", "bf16"}
    pytest.importorskip("onnxruntime")
    from lightnets.bench.doctor import deploy_table

    deploy = deploy_table("mobilenetv1_025_cifar", min_time=0.05)
    assert {"eager", "onnxruntime"} <= {r["runtime"] for r in deploy} and deploy[0][""] == "fastest"
    assert all(r["status"] == "ok" or r["status"].startswith("skipped") for r in deploy)


def test_runtime_auto_picks_an_installed_runtime_once(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from lightnets.deploy import export_onnx, load_for_deploy

    model, info = load_for_deploy("mobilenetv1_025_cifar")
    path = export_onnx(model, tmp_path / "m.onnx", info).path
    runtime, line = probe.choose_runtime(path, min_time=0.1)
    usable, _ = probe.deploy_runtimes()
    assert runtime in usable and line.startswith("runtime") and runtime in line
    again, line = probe.choose_runtime(path, min_time=0.1)
    assert again == runtime and (line.endswith("(cached)") or len(usable) == 1)
    image = write_folder(tmp_path / "data") / "test" / "dark" / "0.png"
    assert main(["predict", str(path), str(image), "--topk", "1"]) == 0
    assert "runtime" in capsys.readouterr().err


def test_benchmark_auto_times_every_backend_that_runs_here(capsys):
    pytest.importorskip("onnxruntime")
    argv = ["benchmark", "--models", "mobilenetv1_025_cifar", "--backends", "auto", "--batch-sizes", "1",
            "--min-time", "0.1", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime" in printed and "eager" in printed and "fastest here for mobilenetv1_025_cifar" in printed


def test_frozen_stages_compute_in_bf16_and_the_trained_layers_in_fp32():
    from lightnets.models import create_model
    from lightnets.models.base import FROZEN_BF16, autocast_for, set_frozen_amp

    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_100_cifar").eval()
    model.freeze_stages(2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fp32 = model(x)
    seen = {}
    for name, module in [("stem", model.stem), *((f"stage{i}", s) for i, s in enumerate(model.stages))]:
        module.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.dtype))
    set_frozen_amp(model, FROZEN_BF16)
    with autocast_for(x.device, FROZEN_BF16):
        mixed = model(x)
        outs = model.forward_stages(x)
    frozen = {"stem", "stage0", "stage1"}
    assert all(seen[n] == torch.bfloat16 for n in frozen)
    assert all(dtype == torch.float32 for n, dtype in seen.items() if n not in frozen) and len(seen) > 3
    assert mixed.dtype == torch.float32 and all(out.dtype == torch.float32 for out in outs)
    assert not torch.equal(mixed, fp32) and torch.allclose(mixed, fp32, rtol=0.1, atol=0.1)
    mixed.sum().backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)
    set_frozen_amp(model, None)
    with torch.no_grad():
        assert torch.equal(model(x), fp32)


def test_probe_offers_bf16_for_frozen_stages_only_where_there_are_some(monkeypatch):
    from lightnets.models import create_model
    from lightnets.models.base import FROZEN_BF16
    from lightnets.train.recipes import Recipe

    fake_cpu(monkeypatch, WITH_BF16)
    asked = fake_timings(monkeypatch, lambda c: {"bf16": 1.5, FROZEN_BF16: 0.7}.get(c.amp, 1.0))
    model = create_model("mobilenetv1_025_cifar")
    assert probe_speed(model, (3, 32, 32), 16, channels_last=True, threads=1).amp is None
    assert [c.amp for c in asked[-1]] == [None, "bf16"]
    model.freeze_stages(1)
    choice = probe_speed(model, (3, 32, 32), 16, channels_last=True, threads=1)
    assert [c.amp for c in asked[-1]] == [None, "bf16", FROZEN_BF16]
    assert choice.amp == FROZEN_BF16 and choice.line().startswith(f"auto: {FROZEN_BF16}, channels_last")
    fake_cpu(monkeypatch, NO_BF16)
    assert probe_speed(model, (3, 32, 32), 16, channels_last=True, threads=1).how == "given"  # fp32 alone
    with pytest.raises(LightnetsError, match=f"amp {FROZEN_BF16} .* needs --freeze N"):
        Recipe().replace(amp=FROZEN_BF16)


def test_a_run_with_bf16_frozen_stages_records_it_and_resume_keeps_it(tmp_path, monkeypatch, capsys):
    from lightnets.models.base import FROZEN_BF16
    from lightnets.train import train

    fake_cpu(monkeypatch, WITH_BF16)
    fake_timings(monkeypatch, lambda c: 0.5 if c.amp == FROZEN_BF16 else 1.0)
    out = tmp_path / "run"
    result = train("mobilenetv1_025_cifar", write_folder(tmp_path / "data"), "fast", out=out, epochs=1, warmup=0,
                   batch_size=16, freeze=1, channels_last=True, threads=1)
    assert f"auto: {FROZEN_BF16}, channels_last, 1 thread" in capsys.readouterr().err
    assert result.config["recipe"]["amp"] == FROZEN_BF16 and 0 <= result.test.top1 <= 100
    train(resume=out, epochs=2)
    assert f"recorded: {FROZEN_BF16}" in capsys.readouterr().err
