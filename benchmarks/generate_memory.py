"""Peak host memory of emo-generate against the audio length: flat since generation streams end to end.

    python benchmarks/generate_memory.py [--lengths 30 120 300] [--old-lengths 30 120]
        [--out benchmarks/results/generate_memory.json]

Each run is emo-generate on configs/tiny.py:stage2 with --random-init, a noise portrait with --face-box and a
synthesised 16 kHz WAV (a 220 Hz tone in noise) of the given length, in a fresh Python process of its own that
reports its peak resident set (VmHWM of /proc/self/status) as it exits; ru_maxrss of RUSAGE_CHILDREN would be the
maximum over all children. DDIM steps are cut to 1 (--config.sample.steps 1): memory is what is measured, and the
denoiser's work per clip does not depend on the length. Growth per minute is the least-squares slope over the lengths.
Every default length is longer than the tiny config's 10 s wav2vec2 window, so all runs compile the same programs
(a clip shorter than one window is encoded by a smaller program, which changes the peak by itself; a first run
with 10 s, 60 s and 5 min read 995, 1047 and 1041 MB: the step is that, not growth). The shortest length runs
--repeats times (default 3): the spread of those peaks is the run-to-run noise, and the
streamed pipeline counts as flat when its growth over the longest length stays inside that noise.

"old" runs emo_jax/sample/generate.py of commit 4565649 (read with git show), the last before streaming, on
today's whole-array functions it calls (load_audio, audio_features, write_video, contact_sheet): it held the audio,
all its features and every decoded frame, then joined the frames. It runs the shorter lengths only, to keep the
run short (the 5-minute run alone takes about 6 minutes on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np
from PIL import Image

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_COMMIT = "4565649"
SAMPLE_RATE = 16000
# Runs emo-generate in this process (the old pipeline put in place of emo_jax.sample.generate if a source file is
# given) and prints the process's peak resident set in MB as the last line.
_CHILD = """
import json, os, sys, types
os.environ.setdefault("JAX_PLATFORMS", "cpu")
argv, old_source = json.loads(sys.argv[1]), sys.argv[2]
if old_source:
    module = types.ModuleType("emo_jax.sample.generate")
    module.__file__ = old_source
    exec(compile(open(old_source).read(), old_source, "exec"), module.__dict__)
    old_generate = module.generate  # restored the checkpoint itself: today's command passes restore_model in
    module.generate = lambda args, config, restore_model=None: old_generate(args, config)
    sys.modules["emo_jax.sample.generate"] = module
from emo_jax.cli.generate import main
status = main(argv)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"status": status, "peak_rss_mb": peak / 1024}))
"""


def write_wav(path: str, seconds: float) -> str:
    """A 220 Hz tone in noise, int16 mono at 16 kHz."""
    rng = np.random.default_rng(0)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for start in range(0, round(seconds * SAMPLE_RATE), 60 * SAMPLE_RATE):  # a minute at a time
            t = np.arange(start, min(start + 60 * SAMPLE_RATE, round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
            x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))
            w.writeframes((x * 32767).astype(np.int16).tobytes())
    return path


def measure(folder: str, seconds: float, old_source: str) -> dict:
    """Peak RSS (MB) and wall time of one emo-generate run in a fresh process."""
    image = os.path.join(folder, "face.png")
    Image.fromarray(np.random.default_rng(0).integers(60, 200, (96, 128, 3), dtype=np.uint8)).save(image)
    argv = ["--config", os.path.join(_ROOT, "configs/tiny.py:stage2"), "--random-init", "--image", image,
            "--face-box", "40,20,88,68", "--audio", write_wav(os.path.join(folder, f"{seconds:g}s.wav"), seconds),
            "--out", os.path.join(folder, f"{seconds:g}s.mp4"), "--contact-sheet",
            os.path.join(folder, f"{seconds:g}s.png"), "--config.sample.steps", "1"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(argv), old_source], cwd=_ROOT, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 0, result
    return {"seconds": seconds, "peak_rss_mb": round(result["peak_rss_mb"], 1),
            "wall_s": round(time.perf_counter() - start, 1)}


def growth_per_minute(runs: list[dict]) -> float | None:
    """Least-squares slope of peak RSS (MB) over audio minutes."""
    if len(runs) < 2:
        return None
    minutes = np.asarray([r["seconds"] for r in runs]) / 60
    return round(float(np.polyfit(minutes, [r["peak_rss_mb"] for r in runs], 1)[0]), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=float, nargs="+", default=[30, 120, 300], help="audio seconds per run")
    p.add_argument("--old-lengths", type=float, nargs="*", default=[30, 120],
                   help=f"audio seconds for commit {OLD_COMMIT}'s emo-generate (none: skip)")
    p.add_argument("--repeats", type=int, default=3, help="runs of the shortest length, for the noise")
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks/results/generate_memory.json"))
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        old_source = ""
        if args.old_lengths:
            old_source = os.path.join(folder, "old_generate.py")
            with open(old_source, "w") as f:
                f.write(subprocess.run(["git", "show", f"{OLD_COMMIT}:emo_jax/sample/generate.py"], cwd=_ROOT,
                                       check=True, stdout=subprocess.PIPE, text=True).stdout)
        for name, lengths, source in (("streamed", args.lengths, ""), ("old", args.old_lengths, old_source)):
            runs = [measure(folder, s, source) for s in lengths]
            results[name] = {"runs": runs, "growth_mb_per_minute": growth_per_minute(runs)}
        shortest = min(args.lengths)
        repeats = [r["peak_rss_mb"] for r in results["streamed"]["runs"] if r["seconds"] == shortest]
        repeats += [measure(folder, shortest, "")["peak_rss_mb"] for _ in range(args.repeats - 1)]
        noise = round(max(repeats) - min(repeats), 1)
        slope = abs(results["streamed"]["growth_mb_per_minute"] or 0)
        over_range = round(slope * (max(args.lengths) - shortest) / 60, 1)
        results["noise"] = {"seconds": shortest, "peak_rss_mb": repeats, "spread_mb": noise,
                            "streamed_growth_over_lengths_mb": over_range, "flat": over_range <= noise}

    print(f"{'pipeline':<10}{'audio':>10}{'peak RSS':>12}{'wall':>9}")
    for name in ("streamed", "old"):
        r = results[name]
        for run in r["runs"]:
            print(f"{name:<10}{run['seconds']:>9g}s{run['peak_rss_mb']:>9.1f} MB{run['wall_s']:>8.1f}s")
        print(f"{name:<10}{'growth':>10}{r['growth_mb_per_minute']!s:>9} MB/min")
    n = results["noise"]
    print(f"noise: {n['seconds']:g} s run {len(n['peak_rss_mb'])} times, peaks spread {n['spread_mb']} MB; streamed "
          f"growth over the lengths {n['streamed_growth_over_lengths_mb']} MB: {'flat' if n['flat'] else 'NOT flat'}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": "configs/tiny.py:stage2", "sample_steps": 1, "fps": 25, **results}, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
