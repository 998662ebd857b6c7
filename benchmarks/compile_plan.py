"""Paper-scale train steps compiled ahead of time for TPU slices on this (CPU) host: the scale-plan table.

    python benchmarks/compile_plan.py [--only NAME ...] [--out benchmarks/results/compile_plan.json]

Each row compiles the full emo_512 train step (remat on, bf16 compute, fp32 master weights, donated state)
for one topology and mesh, and records XLA's per-chip memory, FLOPs and step-time estimate. Rows already in
the output file are kept, so the table can be filled in over several runs (each compile takes minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emo_jax.config import load_config, override  # noqa: E402
from emo_jax.flops import count_flops  # noqa: E402
from emo_jax.plan import (flop_fields, model_flops_config, plan, run_settings, trace_train_step,  # noqa: E402
                          utilization_fields)
from emo_jax.topology import topology_devices  # noqa: E402

# name: (variant, topology, global batch, mesh data, fsdp, tensor, attention[, config overrides]). Stage 1 trains on
# single frames (the paper's batch 48 and larger); stages 2/3 on 4 + 12 frames at 512^2, one clip per data x fsdp
# group. Attention: plain XLA where HBM allows (XLA then gives its step-time estimate); "chunked" on v5e (16 GiB)
# and v6e (32 GiB), where one clip's full 4096 x 8192 score matrices would not fit beside the state. Where a clip
# is split over tensor-parallel chips, the ResNet blocks are rematerialised too: their saved activations are
# all-gathered to full channels and tile-padded (the row without it is kept, to show why).
RESNET_REMAT = {"model.unet.remat_resnets": "True"}  # config key: value as on the command line (--config.KEY VALUE)
DOTS_SAVED = {"model.unet.remat_policy": "dots_saveable"}
ROWS = {
    "stage1-v5e-64-b64": ("stage1", "v5e-64", 64, 8, 8, 1, "chunked"),
    "stage1-v5e-256-b256": ("stage1", "v5e-256", 256, 32, 8, 1, "chunked"),
    "stage1-v5p-64-b48": ("stage1", "v5p-64", 48, 8, 2, 2, "xla"),  # 32 chips; 48 splits 16 ways, not 32
    "stage1-v5p-128-b64": ("stage1", "v5p-128", 64, 16, 4, 1, "xla"),
    # 16 frames per chip (maxdiffusion's SD training runs 16 images per v5p chip), splash attention where the
    # keys reach model.unet.attention_min_keys: one frame per chip leaves the chip mostly idle.
    "stage1-v5p-128-b1024-splash": ("stage1", "v5p-128", 1024, 16, 4, 1, "splash"),
    # The same with each rematerialised block keeping its matmul outputs (jax.checkpoint_policies.dots_saveable)
    # rather than recomputing them in the backward pass: more HBM, fewer FLOPs.
    "stage1-v5p-128-b1024-splash-dots": ("stage1", "v5p-128", 1024, 16, 4, 1, "splash", DOTS_SAVED),
    "stage1-v6e-64-b64": ("stage1", "v6e-64", 64, 8, 8, 1, "xla"),
    "stage1-v5e-256-b2048-splash": ("stage1", "v5e-256", 2048, 32, 8, 1, "splash"),  # 8 frames per chip
    "stage2-v5e-64-b16-blocks-remat": ("stage2", "v5e-64", 16, 2, 8, 4, "chunked"),
    "stage2-v5e-64-b16": ("stage2", "v5e-64", 16, 2, 8, 4, "chunked", RESNET_REMAT),
    "stage2-v5e-256-b64": ("stage2", "v5e-256", 64, 8, 8, 4, "chunked", RESNET_REMAT),
    # One clip per chip on v5e's 16 GiB: splash attention and the ResNets rematerialised, no tensor parallelism.
    "stage2-v5e-256-b256-splash": ("stage2", "v5e-256", 256, 32, 8, 1, "splash", RESNET_REMAT),
    "stage2-v5p-64-b32": ("stage2", "v5p-64", 32, 8, 4, 1, "xla"),
    "stage2-v5p-128-b64": ("stage2", "v5p-128", 64, 16, 4, 1, "xla"),
    # One clip per chip with splash attention for the long spatial attentions (the 64x64 level's 4,096 x 8,192
    # score matrices were most of the XLA row's 2.0 TB of HBM traffic per step).
    "stage2-v5p-128-b64-splash": ("stage2", "v5p-128", 64, 16, 4, 1, "splash"),
    "stage2-v5p-128-b128-splash": ("stage2", "v5p-128", 128, 16, 4, 1, "splash"),  # two clips per chip
    "stage2-v5p-128-b256-splash": ("stage2", "v5p-128", 256, 16, 4, 1, "splash"),  # four clips per chip
    "stage2-v5p-128-b256-splash-dots": ("stage2", "v5p-128", 256, 16, 4, 1, "splash", DOTS_SAVED),
    "stage2-v6e-64-b32": ("stage2", "v6e-64", 32, 4, 8, 2, "chunked", RESNET_REMAT),
    "stage3-v5p-128-b64": ("stage3", "v5p-128", 64, 16, 4, 1, "xla"),
    # Stage 3 with stage 2's best settings: four clips per chip, splash attention, blocks keeping their matmul
    # outputs (the temporal and speed layers train).
    "stage3-v5p-128-b256-splash-dots": ("stage3", "v5p-128", 256, 16, 4, 1, "splash", DOTS_SAVED),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", help=f"row names (default all): {sorted(ROWS)}")
    # pallas_tpu cannot be used at SD1.5 widths: its flash kernel needs head_dim <= 128 or a multiple of 128, and
    # the two deepest levels have 160. Plain XLA attention is the default: "chunked" (queries under lax.map)
    # bounds the score memory, but XLA's cost model gives no step-time estimate for a program with loops and
    # counts a loop body once (the report's FLOPs then come from the jaxpr count, and the estimate from them).
    p.add_argument("--attention", help="model.unet.attention_impl for every row (default: each row's own)")
    p.add_argument("--out", default="benchmarks/results/compile_plan.json")
    p.add_argument("--recount", action="store_true",
                   help="only re-count the FLOPs of rows already in --out on the step's jaxpr (a trace, no compile), "
                        "after a change to the counter")
    p.add_argument("--model-flops", action="store_true",
                   help="only add the model FLOPs and the estimated MFU / HFU to rows of --out compiled before emo-jax "
                        "reported them (a trace, no compile)")
    args = p.parse_args(argv)
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    for name in args.only or (results if args.recount or args.model_flops else ROWS):
        if args.model_flops:
            if "error" in results[name] or results[name].get("model_flops_per_step"):
                continue
            results[name] = add_model_flops(name, results[name])
        elif args.recount:
            results[name] = recount(name, results[name])
        else:
            results[name] = compile_row(name, args.attention or ROWS[name][6])
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(args.out + ".tmp", args.out)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    print("\n" + markdown_table(results))
    return 0


def row_config(name: str, attention: str):
    variant, _, batch, data, fsdp, tensor, _, *extra = ROWS[name]
    config = load_config(f"configs/emo_512.py:{variant}")
    config.train.batch_size = batch
    config.mesh.shape.update({"data": data, "fsdp": fsdp, "tensor": tensor})
    config.model.unet.attention_impl = attention
    for dotted, value in (extra[0] if extra else {}).items():
        override(config, dotted, value)
    return config


def compile_row(name: str, attention: str) -> dict:
    topology, config = ROWS[name][1], row_config(name, attention)
    start = time.time()
    try:
        row = plan(config, topology)
    except Exception as e:  # a row that does not compile is a result too (e.g. out of memory at compile)
        # XLA's out-of-memory report (usage by kind, largest allocations) is kept whole: it says what to change.
        row = {**run_settings(config, topology), "error": f"{type(e).__name__}: {str(e)[:8000]}"}
    row["compile_seconds_on_this_host"] = round(time.time() - start, 1)
    return row


def recount(name: str, row: dict) -> dict:
    """The row with its FLOPs from the jaxpr of the same program (same attention, mesh and batch)."""
    chip, devices = topology_devices(row["topology"])
    counted = count_flops(trace_train_step(row_config(name, row["attention_impl"]), devices)[0].jaxpr)
    return {**row, **flop_fields(row["xla_flops_per_step"], counted, row["chips"], chip)}


def add_model_flops(name: str, row: dict) -> dict:
    """The row with its model FLOPs (emo_jax.plan.model_flops_config's step, traced as plan() does) and the MFU
    and HFU of its step-time estimate."""
    chip, devices = topology_devices(row["topology"])
    config = model_flops_config(row_config(name, row["attention_impl"]))
    model = count_flops(trace_train_step(config, devices)[0].jaxpr).flops / row["chips"]
    return {**row, **utilization_fields(model, row["flops_per_step"], row.get("estimated_step_seconds"), chip)}


def _fmt(value, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value else "n/a"


def _remat(r: dict) -> str:
    """What is rematerialised and, where it is not nothing_saveable, what each block keeps for the backward."""
    if not r["remat"]:
        return "off"
    policy = r.get("remat_policy", "nothing_saveable")
    return ("blocks + ResNets" if r["remat_resnets"] else "blocks") + ("" if policy == "nothing_saveable"
                                                                       else f" ({policy})")


def _error(text: str) -> str:
    """The table's short form of a compile error: XLA's "Used X of Y hbm" when it ran out of memory."""
    used = re.search(r"Used (\S+) of (\S+) hbm", text)
    return f"out of HBM: {used[1]} of {used[2]}" if used else f"error: {text[:160]}"


def _kernels(r: dict) -> str:
    """The FLOPs inside Pallas kernels, which neither XLA nor the jaxpr sees (plan.add_kernel_flops)."""
    kernel = r.get("kernel_flops_per_step")
    return f"; + {kernel / 1e12:.2f} in kernels" if kernel else ""


def markdown_table(results: dict) -> str:
    """The rows as the Markdown table docs/scale.md shows. Frames are the frames each example denoises: one in
    stage 1, a clip's model.clip_frames in stages 2-3 (its motion frames are inputs)."""
    clip_frames = load_config("configs/emo_512.py:stage2").model.clip_frames
    lines = ["| row | chips | mesh (data x fsdp x tensor) | global batch | per chip | attention | remat "
             "| GiB / chip (of HBM) | fits | TFLOP / chip / step (XLA; jaxpr matmuls) | model TFLOP / chip "
             "| FLOPs floor ms | estimate ms (source) | MFU (HFU) | examples / s | frames / s / chip "
             "| compile s here |",
             "|---|---:|---|---:|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {r['topology']} | | | | {r.get('attention_impl', '')} | {_remat(r)} | "
                         f"| {_error(r['error'])} | | | | | | | | {r['compile_seconds_on_this_host']:.0f} |")
            continue
        m = r["mesh"]
        est = r.get("estimated_step_seconds")
        xla, jaxpr = r["xla_flops_per_step"], r["jaxpr_flops_per_step"]
        model = r.get("model_flops_per_step")
        frames = 1 if r.get("stage", int(name[len("stage")])) == 1 else clip_frames
        per_chip_fps = r["examples_per_second"] * frames / r["chips"] if r.get("examples_per_second") else None
        utilisation = (f"{r['estimated_mfu']:.2f} ({r['estimated_hfu']:.2f})" if r.get("estimated_mfu") else "n/a")
        lines.append(
            f"| {name} | {r['chips']} {r['chip']} | {m['data']} x {m['fsdp']} x {m['tensor']} | {r['global_batch']} "
            f"| {r['global_batch'] / r['chips']:g} | {r['attention_impl']} | {_remat(r)} "
            f"| {r['hbm_per_chip_bytes'] / 2**30:.1f} ({r['hbm_capacity_bytes'] / 2**30:.0f}) "
            f"| {'yes' if r['fits'] else 'NO'} | {xla / 1e12:.2f}; {_fmt(jaxpr / 1e12 if jaxpr else None, 2)}"
            f"{_kernels(r)} | {_fmt(model / 1e12 if model else None, 2)} "
            f"| {r['flops_floor_seconds'] * 1e3:.1f} "
            f"| {_fmt(est * 1e3 if est else None)} ({r.get('estimate_source', 'XLA gave none')}) | {utilisation} "
            f"| {_fmt(r.get('examples_per_second'))} | {_fmt(per_chip_fps)} | {r['compile_seconds_on_this_host']:.0f} |")
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
