"""The training commands' options come from the dataclasses: one declaration per field, `--config` files under
explicit options, and the proxy budgets of search, scale and adapt."""

import argparse
import dataclasses
import json

import pytest

import lightnets.cli.options as options
from lightnets import LightnetsError
from lightnets.cli import build_parser, main
from lightnets.detect.train import RECIPE_FIELDS_UNUSED
from lightnets.search import ProxyBudget
from lightnets.train import Recipe

TRAINING_COMMANDS = (["train"], ["distill"], ["specialists", "gen", "--data", "d"], ["detect", "train"])


def parse(argv):
    return build_parser().parse_args(argv)


def test_a_field_added_to_the_recipe_is_an_option_of_every_training_command(monkeypatch):
    @dataclasses.dataclass
    class Extended(Recipe):
        mixup: float = dataclasses.field(default=0.0, metadata={"help": "mixup alpha"})
        hard_flip: bool = False

    monkeypatch.setattr(options, "Recipe", Extended)
    for command in TRAINING_COMMANDS:
        args = parse([*command, "--mixup", "0.2", "--hard-flip"])
        assert (args.mixup, args.hard_flip) == (0.2, True)
    given = options.recipe_overrides(parse(["train", "--mixup", "0.2", "--no-hard-flip"]))
    assert given["mixup"] == 0.2 and given["hard_flip"] is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--mixup", "lots"])


def test_every_recipe_field_parses_with_its_type():
    args = parse(["train", "--grad-clip", "none", "--rrc-scale", "0.35,1", "--no-flip", "--amp", "auto",
                  "--no-channels-last", "--budget-min", "2.5", "--momentum", "0.8", "--opt", "adamw", "--tta"])
    given = options.recipe_overrides(args)
    assert given["grad_clip"] == "none" and given["rrc_scale"] == (0.35, 1.0) and given["flip"] is False
    assert given["amp"] == "auto" and given["channels_last"] is False and given["budget_min"] == 2.5
    assert given["momentum"] == 0.8 and given["opt"] == "adamw" and given["tta"] is True
    recipe = Recipe().replace(**{k: v for k, v in given.items() if k != "threads"})
    assert recipe.grad_clip is None and recipe.rrc_scale == (0.35, 1.0)
    assert set(options.recipe_overrides(parse(["train"]))) == {"threads"}  # nothing given: the recipe's own
    detect = parse(["detect", "train", "--lr", "0.01", "--flip", "0.5"])  # detect's own --flip: a probability
    assert options.recipe_overrides(detect, exclude=RECIPE_FIELDS_UNUSED)["lr"] == 0.01
    for argv in (["train", "--opt", "rmsprop"], ["detect", "train", "--cutout", "4"]):  # not a detection field
        with pytest.raises(SystemExit):
            parse(argv)


def test_config_file_under_explicit_options(tmp_path, capsys):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"lr": 0.05, "epochs": 2, "rrc_scale": [0.5, 1.0]}))
    given = options.recipe_overrides(parse(["train", "--config", str(path), "--epochs", "3"]))
    assert given["lr"] == 0.05 and given["epochs"] == 3 and given["rrc_scale"] == (0.5, 1.0)
    run_config = tmp_path / "config.json"  # a run folder's record: its recipe is used
    run_config.write_text(json.dumps({"model": "x", "recipe": {"lr": 0.01, "seed": 7}}))
    assert options.recipe_overrides(parse(["train", "--config", str(run_config)]))["seed"] == 7
    path.write_text("[1, 2]")
    with pytest.raises(LightnetsError, match="must hold a mapping of recipe fields"):
        options.read_config_file(str(path))
    path.write_text("{not json")
    with pytest.raises(LightnetsError, match="is not valid json"):
        options.read_config_file(str(path))
    with pytest.raises(LightnetsError, match="cannot read --config"):
        options.read_config_file(str(tmp_path / "missing.json"))
    path.write_text(json.dumps({"bogus": 1}))
    assert main(["train", "--data", "sample", "--config", str(path)]) == 2
    assert "unknown recipe field(s) bogus" in capsys.readouterr().err


def test_proxy_budget_options_of_search_scale_and_adapt():
    search = parse(["search", "--train-images", "500", "--opt", "sgd"])
    assert options.dataclass_values(search, ProxyBudget) == {"train_images": 500, "opt": "sgd"}
    scale = parse(["scale", "--val-images", "100"])
    assert options.dataclass_values(scale, ProxyBudget) == {"val_images": 100}
    adapt = parse(["adapt", "ckpt", "--target-latency", "1", "--short-images", "640", "--short-lr", "0.001",
                   "--epochs", "3"])
    assert options.dataclass_values(adapt, ProxyBudget, prefix="short-") == {"train_images": 640, "lr": 0.001}
    assert adapt.epochs == 3  # the final fine-tune's, apart from the short ones
    parser = argparse.ArgumentParser()
    options.add_dataclass_options(parser, ProxyBudget, default_help="default {default}")
    assert "default 2000" in parser.format_help()
