"""emo-summary: parameter counts per top-level module, built abstractly (no memory)."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from flax import traverse_util

from emo_jax.build import abstract_params
from emo_jax.cli.runner import ArgumentParser, run
from emo_jax.params import MODULES, count_by_module, module_of, trainable_mask, trainable_selection


def summarize(config) -> dict:
    params = abstract_params(config)
    counts = count_by_module(params)
    modules = {name: counts[name] for name in MODULES if name in counts}
    unet_and_layers = {k: v for k, v in params.items() if k != "vae"}  # the frozen VAE is outside the train state
    selection = trainable_selection(config.train.stage, config.train.trainable)
    mask = traverse_util.flatten_dict(trainable_mask(unet_and_layers, selection))
    trainable = [(p, leaf) for p, leaf in traverse_util.flatten_dict(unet_and_layers).items() if mask[p]]
    trainable_modules = {module_of(p) for p, _ in trainable}
    return {
        "modules": modules,
        "total": sum(modules.values()),
        "trainable": sum(int(np.prod(leaf.shape)) for _, leaf in trainable),
        "trainable_modules": [name for name in modules if name in trainable_modules],
    }


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="emo-summary", description=__doc__)
    parser.add_argument("--json", help="also write the counts to this JSON file")
    return parser


def _run(args: argparse.Namespace, config) -> None:
    report = summarize(config)
    print(f"{'module':<18}{'parameters':>16}  trainable")
    for name, n in report["modules"].items():
        print(f"{name:<18}{n:>16,}  {'yes' if name in report['trainable_modules'] else ''}")
    print(f"{'total':<18}{report['total']:>16,}")
    print(f"{'trainable':<18}{report['trainable']:>16,}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    return run(_parser(), _run, argv, config=True)


if __name__ == "__main__":
    sys.exit(main())
