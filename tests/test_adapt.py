"""NetAdapt: filter removal keeps the network valid and its trained function, the table predicts the pruned
network, and the adapt loop reaches its target, logs and resumes."""

import dataclasses
import json

import pytest
import torch
from test_search import CIFAR, tiny_data

import lightnets
from lightnets.bench import Timing, count_params
from lightnets.errors import LightnetsError
from lightnets.models.base import randomize_batch_norms
from lightnets.search import (
    Arch,
    LatencyTable,
    ProxyBudget,
    adapt,
    build_latency_table,
    equal_latency_width,
    narrower,
    network_layers,
    proposal,
    prunable_widths,
    prune,
    removable,
    table_latency,
    timed_layers,
)
from lightnets.search import latency as latency_module
from lightnets.search import netadapt as adapt_module
from lightnets.train import get_recipe, load_model, save_checkpoint

# Three stages (the third with squeeze-excite), half width, a small head: 7 prunable layers.
TINY = dataclasses.replace(CIFAR.reference(), stages=CIFAR.reference().stages[:3], width_mult=0.5, final=128,
                           head=64)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fake_timer(monkeypatch):
    """Table entries 'measured' instantly: a latency growing with the layer's weights and its input's area."""
    measured = []

    def fake_measure(build, shape, *args, **kwargs):
        measured.append(build.__self__.key)
        weights = sum(p.numel() for p in build().parameters())
        return Timing(1e-6 * weights * shape[2] * shape[3] / 64 + 1e-3, 0.0, 1)

    monkeypatch.setattr(latency_module, "measure", fake_measure)
    return measured


def tiny_model(arch: Arch = TINY, classes: int = 4) -> torch.nn.Module:
    model = lightnets.create_model("mnas_space_cifar", num_classes=classes, arch=arch.to_dict()).eval()
    randomize_batch_norms(model)
    return model


def test_old_architecture_configs_still_load_and_serialise_unchanged():
    old = CIFAR.reference().to_dict()
    assert "mids" not in old["stages"][0] and "final_chs" not in old  # unset optional widths are left out
    pruned = narrower(TINY, "block3", 40)
    data = json.loads(json.dumps(pruned.to_dict()))
    assert data["stages"][2]["mids"] == [40] + [b.expand_chs for b in TINY.layers(4)[5:7]]
    assert Arch.from_dict(data) == pruned and pruned.layers(4)[5:] == TINY.layers(4)[5:]
    assert lightnets.create_model("mnas_space_cifar", arch=old).arch == CIFAR.reference()


def test_pruning_keeps_the_network_valid(one_thread, tmp_path):
    model = tiny_model()
    widths = prunable_widths(TINY)
    assert list(widths) == ["block1", "block2", "block3", "block4", "block5", "final", "head"]
    x = torch.randn(2, 3, 32, 32)
    for layer, width in widths.items():
        pruned = prune(model, layer, width - 8)
        assert prunable_widths(pruned.arch)[layer] == width - 8
        fresh = lightnets.create_model("mnas_space_cifar", num_classes=4, arch=pruned.arch.to_dict())
        assert count_params(pruned) == count_params(fresh) < count_params(model)
        with torch.no_grad():
            assert pruned(x).shape == (2, 4)
    meta = {"model": "mnas_space_cifar", "model_args": {"arch": pruned.arch.to_dict()}, "num_classes": 4}
    save_checkpoint(tmp_path / "pruned", pruned.state_dict(), meta)
    assert load_model(tmp_path / "pruned").arch == pruned.arch


def test_bad_narrowing_is_one_clear_error():
    with pytest.raises(LightnetsError, match="'block0' is not a prunable layer"):  # no expansion conv
        narrower(TINY, "block0", 8)
    with pytest.raises(LightnetsError, match="block1 has 32 channels"):
        narrower(TINY, "block1", 32)
    in_chs = TINY.layers(4)[4].in_chs  # block3's input width: it would lose its expansion conv
    with pytest.raises(LightnetsError, match="except its input width"):
        narrower(TINY, "block3", in_chs)


@pytest.mark.parametrize("layer", ["block3", "block2", "final", "head"])
def test_removing_filters_that_contribute_nothing_keeps_the_output(one_thread, layer):
    """Zero the filters that go (so they have the smallest norm) and every path out of them: the pruned
    network must compute exactly what the full one does, which fails if a wrong channel is kept."""
    model = tiny_model()
    width = prunable_widths(TINY)[layer]
    keep = width - 16
    g = torch.Generator().manual_seed(1)
    gone = torch.randperm(width, generator=g)[:width - keep]
    with torch.no_grad():
        if layer.startswith("block"):
            index = int(layer[5:])
            block = [m for stage in model.stages for m in stage][index]
            block.expand[0].weight[gone] = 0
            block.project[0].weight[:, gone] = 0
            old_se, new_se = (a.layers(4)[1 + index].se_chs for a in (TINY, narrower(TINY, layer, keep)))
            if old_se:
                assert new_se < old_se, "pick a block whose squeeze-excite shrinks too"
                block.se.reduce.weight[:, gone] = 0
                hidden = torch.randperm(old_se, generator=g)[:old_se - new_se]
                block.se.reduce.weight[hidden] = 0
                block.se.expand.weight[:, hidden] = 0
        elif layer == "final":
            model.final[0].weight[gone] = 0
            model.head.hidden[0].weight[:, gone] = 0
        else:
            model.head.hidden[0].weight[gone] = 0
            model.head.fc.weight[:, gone] = 0
    pruned = prune(model, layer, keep)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)
    assert count_params(pruned) < count_params(model)


def test_pruned_latency_is_the_table_sum_and_missing_entries_are_measured_once(tmp_path, fake_timer, monkeypatch):
    path = tmp_path / "table.json"
    build_latency_table(network_layers([TINY], 32, 4), path, progress=False)
    before = set(LatencyTable.load(path).entries)
    latency = table_latency(path, 32, 4)
    pruned = narrower(TINY, "block3", 40)
    predicted = latency(pruned)
    table = LatencyTable.load(path)
    keys = [key for key, _, _ in timed_layers(pruned, 32, 4)]
    assert predicted == pytest.approx(sum(table.entries[k]["median_ms"] for k in keys))
    assert set(table.entries) - before == {k for k in keys if " exp40 " in k}  # the narrowed block, added to the file
    assert predicted < latency(TINY)

    fake_timer.clear()
    assert latency(pruned) == predicted and not fake_timer  # measured once, then read from the file


def test_proposal_is_the_widest_narrowing_that_meets_the_budget(tmp_path, fake_timer):
    latency = table_latency(tmp_path / "table.json", 32, 4)
    full = latency(TINY)
    budget = full - 0.05 * full
    width, ms = proposal(TINY, "head", budget, latency)
    assert ms == latency(narrower(TINY, "head", width)) <= budget and width % 8 == 0
    assert latency(narrower(TINY, "head", width + 8)) > budget
    assert proposal(TINY, "block1", 0.0, latency) is None  # no width saves that much
    uniform, uniform_ms = equal_latency_width(TINY, budget, latency)
    assert uniform < TINY.width_mult and uniform_ms <= budget
    assert latency(dataclasses.replace(TINY, width_mult=uniform + 0.02)) > budget


def source_checkpoint(tmp_path, model=None, name="mnas_space_cifar"):
    model = model or tiny_model()
    args = {"arch": model.arch.to_dict()} if name == "mnas_space_cifar" else {}
    meta = {"model": name, "model_args": args, "num_classes": 4, "classes": ["0", "1", "2", "3"],
            "image_size": 32, "mean": [0.3] * 3, "std": [0.2] * 3, "recipe": get_recipe("fast").to_dict(),
            "data": "tiny"}
    (tmp_path / "src").mkdir(parents=True)
    save_checkpoint(tmp_path / "src" / "best", model.state_dict(), meta)
    return tmp_path / "src"


SHORT = ProxyBudget(train_images=16, val_images=8, epochs=1, batch_size=8, lr=0.01, opt="sgd")


def test_adapt_reaches_the_target_logs_and_resumes(one_thread, tmp_path, fake_timer, monkeypatch):
    src, out = source_checkpoint(tmp_path), tmp_path / "adapt"
    latency = table_latency(tmp_path / "table.json", 32, 4)
    source_ms = latency(TINY)
    target = 0.7 * source_ms
    kwargs = dict(out=out, step=0.35, decay=1.0, short=SHORT, finetune={"epochs": 1, "batch_size": 16},
                  table=tmp_path / "table.json", progress=False)

    class Stop(Exception):
        pass

    real = adapt_module.proxy_train

    def stop_after_first_iteration(*args, **kw):
        if (out / "iterations.jsonl").exists():
            raise Stop
        return real(*args, **kw)

    monkeypatch.setattr(adapt_module, "proxy_train", stop_after_first_iteration)
    with pytest.raises(Stop):
        adapt(src, target, tiny_data(), **kwargs)
    first = json.loads((out / "iterations.jsonl").read_text())
    # No layer alone saves 30% of this network, so the step was halved until one could.
    assert first["iteration"] == 1 and first["target_reduction_ms"] == pytest.approx(0.3 * source_ms / 2)
    assert first["latency_ms"] <= source_ms - first["target_reduction_ms"]
    assert {p["layer"] for p in first["proposals"]} <= set(prunable_widths(TINY))

    monkeypatch.setattr(adapt_module, "proxy_train", real)
    result = adapt(src, target, tiny_data(), resume=True, **kwargs)
    lines = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == list(range(1, len(lines) + 1)) and len(lines) >= 2
    assert lines[0] == first and lines == result.iterations
    result_arch = Arch.from_dict(lines[-1]["arch"])
    assert result.latency_ms == lines[-1]["latency_ms"] == latency(result_arch)
    assert result.latency_ms <= target < lines[-2]["latency_ms"]
    assert all(b["latency_ms"] <= a["latency_ms"] - b["target_reduction_ms"] for a, b in zip(lines, lines[1:],
                                                                                              strict=False))

    adapted = load_model(result.checkpoint)
    assert adapted.arch == result_arch and adapted.checkpoint_meta["adapt"]["latency_ms"] == result.latency_ms
    assert count_params(adapted) == count_params(lightnets.create_model("mnas_space_cifar", num_classes=4,
                                                                        arch=result_arch.to_dict()))
    assert result.test_top1 is not None and (out / "finetune" / "last.json").exists()
    uniform = json.loads((out / "uniform_arch.json").read_text())
    assert uniform["latency_ms"] <= result.latency_ms
    assert lightnets.create_model("mnas_space_cifar", **uniform["model_args"]).arch.width_mult == uniform["width_mult"]

    def never(*args, **kw):
        raise AssertionError("a finished iteration or fine-tune ran again")

    monkeypatch.setattr(adapt_module, "proxy_train", never)
    monkeypatch.setattr(adapt_module, "train", never)
    again = adapt(src, target, tiny_data(), resume=True, **kwargs)
    assert again.iterations == result.iterations and again.latency_ms == result.latency_ms

    # Where no width multiplier reaches the adapted latency (a fixed cost per layer), the result still stands.
    (out / "uniform_arch.json").unlink()

    def unreachable(arch, target_ms, latency):
        raise LightnetsError(f"no width multiplier above 0.01 predicts {target_ms:.3f} ms or less")

    monkeypatch.setattr(adapt_module, "equal_latency_width", unreachable)
    said = []
    alone = adapt(src, target, tiny_data(), resume=True, log=said.append, **kwargs)
    assert alone.uniform is None and not (out / "uniform_arch.json").exists()
    assert alone.latency_ms == result.latency_ms and any("no uniformly width-scaled" in m for m in said)
    with pytest.raises(LightnetsError, match="target_ms differ"):
        adapt(src, 0.8 * source_ms, tiny_data(), resume=True, **kwargs)


def test_bad_inputs_are_one_clear_error(tmp_path, fake_timer):
    src = source_checkpoint(tmp_path)
    latency = table_latency(tmp_path / "table.json", 32, 4)
    kwargs = dict(out=tmp_path / "adapt", table=tmp_path / "table.json", short=SHORT)
    with pytest.raises(LightnetsError, match="is not below the source network's predicted latency"):
        adapt(src, latency(TINY), tiny_data(), **kwargs)
    with pytest.raises(LightnetsError, match="does not exist"):
        adapt(tmp_path / "missing", 1.0, tiny_data(), **kwargs)
    other = source_checkpoint(tmp_path / "other", lightnets.create_model("mobilenetv1_025_cifar", num_classes=4),
                              name="mobilenetv1_025_cifar")
    with pytest.raises(LightnetsError, match="holds a 'mobilenetv1_025_cifar' model; NetAdapt prunes"):
        adapt(other, 1.0, tiny_data(), **kwargs)
    assert not (tmp_path / "adapt").exists()  # refused before any folder was made


def test_cli(tmp_path, fake_timer, capsys, monkeypatch):
    import sys

    from lightnets.cli import main

    src = source_checkpoint(tmp_path)
    assert main(["adapt", str(src), "--target-latency", "1000", "--table", str(tmp_path / "table.json")]) == 2
    assert "is not below the source network's predicted latency" in capsys.readouterr().err

    pruned = narrower(TINY, "head", 32)
    (tmp_path / "arch.json").write_text(json.dumps({"model": "mnas_space_cifar",
                                                    "model_args": {"arch": pruned.to_dict()}}))
    given = {}
    monkeypatch.setattr(sys.modules["lightnets.train"], "train", lambda *args, **kwargs: given.update(kwargs))
    monkeypatch.setattr("lightnets.cli.classify.report_run", lambda result: True)
    assert main(["train", "--model", "mnas_space_cifar", "--arch", str(tmp_path / "arch.json"), "--data", "x"]) == 0
    assert given["model_args"] == {"arch": pruned.to_dict()}
    assert main(["train", "--model", "mnas_space_cifar", "--arch", str(tmp_path / "nowhere.json"),
                 "--data", "x"]) == 2
    assert "cannot read an architecture from" in capsys.readouterr().err


def test_a_residual_block_narrowed_to_zero_is_removed_with_the_other_weights_kept(one_thread):
    """Silence block4's branch (its projection's batch norm outputs 0): the network without the block must
    compute exactly what the full one does, which fails if any later block's weights land in the wrong place."""
    assert removable(TINY, "block4") and not removable(TINY, "block3") and not removable(TINY, "final")
    model = tiny_model()
    block = [m for stage in model.stages for m in stage][4]
    with torch.no_grad():
        block.project[1].weight.zero_()
        block.project[1].bias.zero_()
    pruned = prune(model, "block4", 0)
    assert [s.layers for s in pruned.arch.stages] == [1, 2, 2]
    assert pruned.arch.layers(4)[1:5] == TINY.layers(4)[1:5] and pruned.arch.layers(4)[5:] == TINY.layers(4)[6:]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(LightnetsError, match="narrowed to 1..31 channels"):  # the first block of a stage stays
        narrower(TINY, "block1", 0)


def test_proposal_removes_a_residual_block_when_no_width_saves_enough(tmp_path, fake_timer):
    latency = table_latency(tmp_path / "table.json", 32, 4)
    gone = latency(narrower(TINY, "block4", 0))
    assert gone < latency(narrower(TINY, "block4", 8))
    assert proposal(TINY, "block4", gone, latency) == (0, gone)
    assert proposal(TINY, "block3", gone - 1.0, latency) is None  # not residual: nothing saves that much
