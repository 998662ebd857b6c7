"""emo-compile: compile the train step ahead of time for a TPU slice and report per-chip memory and speed."""
from __future__ import annotations

import argparse
import json
import sys

from emo_jax.cli.runner import ArgumentParser, run


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _estimate(seconds: float | None, source: str) -> str:
    return f"{seconds * 1e3:.1f} ms ({source})" if seconds else "none (no FLOP or byte counts from XLA)"


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="emo-compile", description=__doc__)
    p.add_argument("--topology", required=True, help="v4-N, v5e-N (v5litepod-N), v5p-N, v6e-N, or a grid v5e:4x4")
    p.add_argument("--global-batch", type=int, help="overrides config.train.batch_size")
    p.add_argument("--sample", action="store_true",
                   help="also compile the sampler's chunk program (one chip; needs a stage 2/3 config)")
    p.add_argument("--json", help="write the report to this file")
    return p


def _run(args: argparse.Namespace, config) -> None:
    if args.global_batch:
        config.train.batch_size = args.global_batch
    from emo_jax.plan import plan

    result = plan(config, args.topology, sample=args.sample)
    rows = [
        ("topology", f"{result['topology']} ({result['chips']} {result['chip']} chips)"),
        ("mesh", " x ".join(f"{k} {v}" for k, v in result["mesh"].items())),
        ("global batch", result["global_batch"]),
        ("arguments / chip", _gib(result["arguments_bytes"])),
        ("temporaries / chip", _gib(result["temporaries_bytes"])),
        ("outputs / chip", _gib(result["outputs_bytes"])),
        ("total / chip", f"{_gib(result['hbm_per_chip_bytes'])} of {_gib(result['hbm_capacity_bytes'])}"),
        ("fits", "yes" if result["fits"] else "NO"),
        ("FLOPs / step / chip", f"{result['flops_per_step']:.3e} (XLA {result['xla_flops_per_step']:.3e}, "
                                f"jaxpr matmuls {result['jaxpr_flops_per_step']:.3e})"),
        ("FLOPs floor", f"{result['flops_floor_seconds'] * 1e3:.1f} ms"),
        ("step time estimate", _estimate(result["estimated_step_seconds"], result["estimate_source"])),
        ("examples / s", f"{result['examples_per_second']:.2f}" if result["examples_per_second"] else "n/a"),
        ("model FLOPs / chip", f"{result['model_flops_per_step']:.3e} (remat off, XLA attention)"),
        ("estimated MFU / HFU", " / ".join(f"{v:.1%}" if v is not None else "n/a"
                                           for v in (result["estimated_mfu"], result["estimated_hfu"]))),
    ]
    if "sample" in result:
        r = result["sample"]
        rows += [
            ("sampler chunk", f"{r['frames_per_call']} frames on one chip"),
            ("  total / chip", _gib(r["hbm_per_chip_bytes"])),
            ("  fits", "yes" if r["fits"] else "NO"),
            ("  FLOPs / call", f"{r['flops_per_call']:.3e}"),
            ("  time estimate", _estimate(r["estimated_call_seconds"], r["estimate_source"])),
        ]
    for name, value in rows:
        print(f"{name:<22}{value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    return run(_parser(), _run, argv, config=True)


if __name__ == "__main__":
    sys.exit(main())
