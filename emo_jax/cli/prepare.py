"""emo-prepare: raw talking-head videos -> ArrayRecord shards of segment records, plus manifest.json.

Frame rate, crop size, face framing, audio sample rate and wav2vec2 window come from --config (default
configs/emo_512.py), so the records hold what training on that config reads and a portrait given to emo-generate
with that config is framed as the training faces were; each has a flag that overrides it. The output layout and
resuming are described in data_pipeline/prepare.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Sequence

from data_pipeline.extract import PrepareConfig
from data_pipeline.prepare import find_inputs, prepare
from emo_jax.cli.runner import DEFAULT_CONFIG, ArgumentParser, log_to_stderr, run

log = logging.getLogger("emo-prepare")

# PrepareConfig fields whose defaults are config values.
FROM_CONFIG = {"fps": "data.fps", "size": "data.size", "face_expand": "data.face_expand",
               "audio_sample_rate": "audio.sample_rate", "audio_window_seconds": "audio.window_seconds"}


def _parser() -> ArgumentParser:
    defaults = PrepareConfig()
    p = ArgumentParser(prog="emo-prepare", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="folder of videos (searched recursively) or a glob")
    p.add_argument("--output", required=True, help="output folder (created; re-use it to resume)")
    p.add_argument("--workers", type=int, default=1, help="the DirectRunner's parallel processes, one input each")
    p.add_argument("--runner", default="DirectRunner",
                   help="Apache Beam runner (DirectRunner: this machine, --workers processes; DataflowRunner, "
                        "FlinkRunner, SparkRunner: a cluster, see docs/data.md), or 'inline' to prepare in this "
                        "process without Beam")
    p.add_argument("beam_args", nargs="*", metavar="-- BEAM_OPTION",
                   help="after --, standard Beam pipeline options for the runner (--project P --region R ...)")
    for field in dataclasses.fields(PrepareConfig):
        default = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if field.name in FROM_CONFIG:
            p.add_argument(flag, type=type(default), help=f"default config.{FROM_CONFIG[field.name]}")
        else:
            p.add_argument(flag, type=type(default), default=default, help=f"default {default!r}")
    return p


def _run(args: argparse.Namespace, config) -> int:
    log_to_stderr()
    defaults = PrepareConfig()
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(PrepareConfig)}
    for name, key in FROM_CONFIG.items():
        if settings[name] is None:
            section, field = key.split(".")
            settings[name] = type(getattr(defaults, name))(config[section][field])
    manifest = prepare(find_inputs(args.input), args.output, PrepareConfig(**settings), args.workers, args.runner,
                       args.beam_args)
    log.info("%d segments, %.3f hours from %d inputs; skipped: %s", manifest["segments"], manifest["hours"],
             manifest["inputs"], manifest["skipped_counts"] or "none")
    if not manifest["segments"]:
        log.error("no segment could be prepared from %d inputs (skipped: %s); see the reasons in %s",
                  manifest["inputs"], manifest["skipped_counts"], os.path.join(args.output, "manifest.json"))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    return run(_parser(), _run, argv, config=DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(main())
