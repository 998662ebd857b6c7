"""emo-summary: parameter counts per top-level module, built abstractly (no memory)."""
from __future__ import annotations

import argparse
import json
import sys

from emo_jax.build import abstract_params
from emo_jax.config import ConfigError, parse_config_args
from emo_jax.params import MODULES, STAGE_TRAINABLE, count_by_module


def summarize(config) -> dict:
    counts = count_by_module(abstract_params(config))
    trainable_modules = STAGE_TRAINABLE[config.train.stage]
    modules = {name: counts[name] for name in MODULES if name in counts}
    return {
        "modules": modules,
        "total": sum(modules.values()),
        "trainable": sum(n for name, n in modules.items() if name in trainable_modules),
        "trainable_modules": [name for name in modules if name in trainable_modules],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config, rest = parse_config_args(argv)
    except ConfigError as e:
        print(f"emo-summary: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="emo-summary", description=__doc__)
    parser.add_argument("--json", help="also write the counts to this JSON file")
    args = parser.parse_args(rest)
    report = summarize(config)
    print(f"{'module':<18}{'parameters':>16}  trainable")
    for name, n in report["modules"].items():
        print(f"{name:<18}{n:>16,}  {'yes' if name in report['trainable_modules'] else ''}")
    print(f"{'total':<18}{report['total']:>16,}")
    print(f"{'trainable':<18}{report['trainable']:>16,}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
