"""emo-demo's speed measure for other stage-3 runs on a demo's data: each stage-3 workdir drives the demo's control
portraits on their held-out speech at the demo's constant speed settings, as emo-demo's own phase does.

    python benchmarks/speed_control.py DEMO_OUT WORKDIR [WORKDIR ...] [--seed 0]
        [--out benchmarks/results/speed_control.json]

DEMO_OUT is a full `emo-demo --out` folder; each WORKDIR an emo-train stage-3 run from its stage 2, e.g.
    emo-train --config configs/demo.py:stage3 --workdir W --config.data.path DEMO_OUT/prepared
        --config.vae.path DEMO_OUT/encoders/vae --config.audio.wav2vec_path DEMO_OUT/encoders/wav2vec2
        --config.init.previous_stage DEMO_OUT/stage2 --config.train.steps 750
The stage-2 rows ("no speed layers") are the ones emo-demo measured, read from DEMO_OUT/metrics.json. Prints a
table of the mean roll velocity per setting and writes every video's row to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> dict:
    from emo_jax.demo.evaluate import Generator, SpeedResult, measure_speed, speed_summary
    from emo_jax.demo.run import demo_configs
    from emo_jax.demo.synthetic import make_identities

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("demo_out")
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--seed", type=int, default=0, help="emo-demo's --seed (metrics.json does not record it)")
    p.add_argument("--out", default="benchmarks/results/speed_control.json")
    args = p.parse_args(argv)
    path = lambda *parts: os.path.join(args.demo_out, *parts)  # noqa: E731
    if not os.path.isfile(path("metrics.json")):
        sys.exit(f"{args.demo_out} has no metrics.json: give the folder of a finished `emo-demo --out` run")
    with open(path("metrics.json"), encoding="utf-8") as f:
        demo = json.load(f)
    if demo.get("quick"):
        sys.exit(f"{args.demo_out} is a --quick demo; its stage 2 is too short for the speed measure: run emo-demo "
                 "without --quick")
    config = demo_configs(False)["stage3"]
    config.data.path, config.vae.path = path("prepared"), path("encoders", "vae")
    config.audio.wav2vec_path = path("encoders", "wav2vec2")
    d = config.demo
    idents = make_identities(d.identities)[:d.control_identities]
    portraits = [path("data", f"{i.name}_portrait.png") for i in idents]
    audio = [path("data", "heldout", f"{i.name}.wav") for i in idents]
    settings = tuple(d.speed_settings)
    stage2 = [SpeedResult(**r) for r in demo["speed_videos"] if r["setting"] is None]
    runs = []
    for workdir in args.workdirs:
        with tempfile.TemporaryDirectory() as videos:
            results, _ = measure_speed(Generator(config, workdir), idents, portraits, audio, settings, videos,
                                       args.seed)
        summary = speed_summary(results + stage2, settings)
        runs.append({"workdir": workdir, "speed": summary,
                     "speed_videos": [dataclasses.asdict(r) for r in results + stage2]})
        print(f"{workdir}: " + " / ".join(f"{r['velocity_mean']:.2f}" for r in summary["settings"].values())
              + f" deg/frame at settings {' / '.join(f'{s:g}' for s in settings)}; Spearman "
              f"{summary['spearman']:.2f}; spread {summary['velocity_std_with_speed']:.2f} with speed layers, "
              f"{summary['velocity_std_without']:.2f} without")
    out = {"demo_out": args.demo_out, "settings": list(settings), "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
