"""Latency-aware design commands: latency-table, search, adapt (NetAdapt) and scale (compound scaling)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..report import format_table
from ..search import ProxyBudget
from ..search.netadapt import SHORT_FINETUNE
from .options import add_dataclass_options, dataclass_values


def cmd_latency_table(args: argparse.Namespace) -> int:
    from ..search import latency_table

    table, path = latency_table(args.space, args.input_size, args.table, device=args.device, threads=args.threads,
                                min_time=args.min_time, clock=args.clock, progress=not args.quiet,
                                log=lambda msg: print(msg, file=sys.stderr))
    d = table.device
    print(f"wrote {path}: {len(table.entries)} entries, {d['name']}, {d['threads']} thread(s), {d['clock']} clock, "
          f"torch {d['torch']}")
    return 0


def proxy_budget(args: argparse.Namespace, base: ProxyBudget | None = None, prefix: str = "") -> ProxyBudget:
    """The proxy-training budget from the options given; the rest keep ``base``'s (default ``ProxyBudget()``)."""
    return dataclasses.replace(base or ProxyBudget(), **dataclass_values(args, ProxyBudget, prefix=prefix))


def cmd_search(args: argparse.Namespace) -> int:
    from ..search import search

    budget = proxy_budget(args)
    result = search(args.space, args.data, target_ms=args.target_ms, w=args.w, w_over=args.w_over,
                    population=args.population, sample=args.sample, cycles=args.cycles, seed=budget.seed,
                    budget=budget, table=args.table, input_size=args.input_size, device=args.device,
                    threads=args.threads, min_time=args.min_time, clock=args.clock, out=args.out,
                    exist_ok=args.exist_ok, resume=args.resume, log=lambda msg: print(msg, file=sys.stderr))
    print(format_table(result.rows()))
    print(f"target {result.target_ms:.2f} ms; search folder: {result.run_dir} (candidates.jsonl, pareto.png, "
          "best_arch.json)")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from ..search import adapt

    short = proxy_budget(args, SHORT_FINETUNE, prefix="short-")
    finetune = {k: v for k in ("epochs", "lr", "batch_size", "budget_min") if (v := getattr(args, k)) is not None}
    result = adapt(args.checkpoint, args.target_latency, args.data, out=args.out, resume=args.resume, step=args.step,
                   decay=args.decay, granularity=args.granularity, short=short, finetune=finetune,
                   compare=not args.no_compare, table=args.table,
                   input_size=args.input_size, device=args.device, threads=args.threads, min_time=args.min_time,
                   clock=args.clock, progress=not args.quiet, log=lambda msg: print(msg, file=sys.stderr))
    if result.iterations:
        print(format_table(result.rows()))
    top1 = f", test top-1 {result.test_top1:.2f}%" if result.test_top1 is not None else ""
    print(f"predicted latency {result.source_ms:.3f} -> {result.latency_ms:.3f} ms (target {result.target_ms}){top1}; "
          f"checkpoint {result.checkpoint}")
    if result.uniform:
        print(f"uniform width {result.uniform['width_mult']:g} predicts {result.uniform['latency_ms']:.3f} ms: "
              f"{result.run_dir / 'uniform_arch.json'}")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from ..search import compound_scaling

    budget = proxy_budget(args)
    result = compound_scaling(args.data, model=args.model, base_width=args.base_width, base_depth=args.base_depth,
                              base_size=args.input_size, step=args.step, tolerance=args.tolerance,
                              grid_limit=args.grid_limit, seed=budget.seed, budget=budget, out=args.out,
                              exist_ok=args.exist_ok, resume=args.resume, device=args.device, threads=args.threads,
                              min_time=args.min_time, clock=args.clock, log=lambda msg: print(msg, file=sys.stderr))
    print(result.markdown())
    print(f"scale folder: {result.run_dir} (grid.jsonl, comparison.md)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    def add_latency_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input-size", type=int, default=None, help="input side (default: the space's, 224 or 32)")
        p.add_argument("--table", default=None, help="latency table file (default: one per space, input size and "
                       "device in the lightnets cache); entries already in it are reused")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
        p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per table entry")
        p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall (the protocol) or cpu: one "
                       "thread's CPU time, without other processes' time slices (--threads 1 on a busy machine)")

    p = sub.add_parser("latency-table", help="time every distinct layer of a search space once (batch 1)")
    p.add_argument("--space", default="mobilenetv3", help="mobilenetv3 (224x224) or mobilenetv3_cifar (32x32)")
    add_latency_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_latency_table)

    p = sub.add_parser("search", help="latency-aware architecture search (MnasNet reward, regularized evolution)")
    p.add_argument("--space", default="mobilenetv3_cifar", help="mobilenetv3_cifar (default) or mobilenetv3")
    p.add_argument("--data", default="sample", help="proxy training data: 'sample' (built in), 'cifar10', a folder")
    p.add_argument("--target-ms", type=float, default=None,
                   help="latency target T (default: the predicted latency of the MobileNetV3-Large-like member)")
    p.add_argument("--w", type=float, default=-0.07, help="reward exponent: -0.07 (MnasNet), -0.15 (small models)")
    p.add_argument("--w-over", type=float, default=None, help="exponent over the target (default: --w)")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--sample", type=int, default=3, help="members drawn per cycle; the best is mutated")
    p.add_argument("--cycles", type=int, default=20, help="mutated candidates after the random population")
    add_dataclass_options(p, ProxyBudget, default_help="proxy training (default {default}; the seed also seeds "
                          "the search)")
    add_latency_options(p)
    p.add_argument("--out", default=None, help="search folder (default runs/search/SPACE[-N])")
    p.add_argument("--exist-ok", action="store_true", help="overwrite an existing search folder")
    p.add_argument("--resume", action="store_true", help="continue the search in --out, reusing its accuracies")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("adapt", help="NetAdapt: prune a trained mnas_space network to a latency target")
    p.add_argument("checkpoint", help="run folder or checkpoint of a mnas_space model")
    p.add_argument("--target-latency", type=float, required=True, metavar="MS", help="predicted batch-1 latency "
                   "to reach, ms (the latency table's)")
    p.add_argument("--data", default=None, help="data source (default: the checkpoint's)")
    p.add_argument("--step", type=float, default=0.04, help="latency reduction per iteration, a fraction of the "
                   "current latency (default 0.04)")
    p.add_argument("--decay", type=float, default=0.96, help="the step's decay per iteration (default 0.96)")
    p.add_argument("--granularity", type=int, default=8, help="channels are removed in multiples of this")
    add_dataclass_options(p, ProxyBudget, prefix="short-", defaults=SHORT_FINETUNE,
                          default_help="each proposal's fine-tune (default {default})",
                          aliases={"train_images": "--short-images", "val_images": "--val-images"})
    p.add_argument("--epochs", type=int, default=None, help="the final fine-tune on the whole training split "
                   "(default 10; 0 skips it)")
    p.add_argument("--lr", type=float, default=None, help="the final fine-tune's SGD learning rate (default 0.02)")
    p.add_argument("--batch-size", type=int, default=None, help="the final fine-tune's batch (default 256)")
    p.add_argument("--budget-min", type=float, default=None, help="the final fine-tune's time budget, minutes")
    p.add_argument("--no-compare", action="store_true", help="skip the uniformly width-scaled network of equal "
                   "latency (uniform_arch.json)")
    add_latency_options(p)
    p.add_argument("--out", default=None, help="adapt folder (default runs/adapt/MODEL[-N])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last iteration")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("scale", help="compound scaling: grid search of depth, width, resolution coefficients")
    p.add_argument("--data", default="sample", help="proxy training data: 'sample' (built in), 'cifar10', a folder")
    p.add_argument("--model", default="efficientnet_b0_cifar", help="a model taking width_mult and depth_mult")
    p.add_argument("--base-width", type=float, default=0.5, help="the base's width multiplier (default 0.5)")
    p.add_argument("--base-depth", type=float, default=0.5, help="the base's depth multiplier (default 0.5)")
    p.add_argument("--step", type=float, default=0.05, help="grid step of alpha, beta, gamma (default 0.05)")
    p.add_argument("--tolerance", type=float, default=0.1, help="|alpha beta^2 gamma^2 - 2| allowed (default 0.1)")
    p.add_argument("--grid-limit", type=int, default=None, help="evaluate this many grid points, drawn at random")
    add_dataclass_options(p, ProxyBudget, default_help="proxy training (default {default}; the seed also draws "
                          "the grid points)")
    p.add_argument("--input-size", type=int, default=None, help="the base's input side (default: the model's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per network")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall (the protocol) or cpu")
    p.add_argument("--out", default=None, help="scale folder (default runs/scale/MODEL[-N])")
    p.add_argument("--exist-ok", action="store_true", help="overwrite an existing scale folder")
    p.add_argument("--resume", action="store_true", help="continue in --out, reusing its evaluated points")
    p.set_defaults(func=cmd_scale)
