"""emo-prepare as an Apache Beam pipeline: input paths -> one shard and done-marker per input, skips counted.

    paths | "spread" >> Reshuffle | "prepare" >> ParDo(PrepareInputs) -> (ok markers, "skipped" markers)

Each element is one input video. The DoFn runs data_pipeline.prepare.process_input, the same code a one-process
run calls: decode, cut, track, label, the optional encoders (VAE latents, wav2vec2 features, the models loaded
once per worker in `setup`), and the input's ArrayRecord shard written under a temporary name and renamed, then
its done-marker. So a shard's bytes do not depend on the runner or on how many workers ran it, and a re-run
after an interruption redoes only the inputs without a marker, whatever the runner.

Why per-input shards and not array_record's Beam sink (array_record.beam): the sink writes its shards when the
whole PCollection is done, so a job killed at 90% keeps nothing, and its shards mix inputs, so a resumed job
could not tell what is done. One shard per input is the unit of work, of atomic commit and of resume.

Skipped inputs go to the "skipped" output with their reason and are counted in the Beam metrics (namespace
emo-prepare: inputs_ok, segments, frames, skipped_<reason>); emo-prepare's manifest counts them again from the
done-markers. Any runner works whose workers see `output` as a file system path (a local disk for the
DirectRunner; NFS, Filestore or a gcsfuse mount for a cluster): docs/data.md has the Dataflow and Flink/Spark
recipes.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from data_pipeline import prepare as prepare_module
from data_pipeline.extract import PrepareConfig

log = logging.getLogger("emo-prepare")

NAMESPACE = "emo-prepare"
SKIPPED = "skipped"


class PrepareInputs(beam.DoFn):
    """One input path in, its done-marker out: to the main output when it gave segments, else to "skipped"."""

    def __init__(self, output: str, cfg: PrepareConfig):
        self.output, self.cfg = output, cfg

    def setup(self):
        prepare_module.worker_tools(self.cfg)  # detector, speed estimator and encoders, once per worker

    def process(self, path: str):
        marker = prepare_module.process_input(path, self.output, self.cfg)
        prepare_module.log_marker(marker)
        if marker["status"] == "ok":
            Metrics.counter(NAMESPACE, "inputs_ok").inc()
            Metrics.counter(NAMESPACE, "segments").inc(marker["segments"])
            Metrics.counter(NAMESPACE, "frames").inc(marker["frames"])
            yield marker
        else:
            Metrics.counter(NAMESPACE, f"skipped_{marker['reason']}").inc()
            yield beam.pvalue.TaggedOutput(SKIPPED, marker)


class PrepareTransform(beam.PTransform):
    """PCollection of input paths -> DoOutputsTuple (main: markers of prepared inputs, "skipped": the others).
    The paths are redistributed first, so a runner spreads the inputs of one Create over all its workers."""

    def __init__(self, output: str, cfg: PrepareConfig):
        super().__init__()
        self.output, self.cfg = output, cfg

    def expand(self, paths):
        return (paths
                | "spread inputs" >> beam.Reshuffle()
                | "prepare" >> beam.ParDo(PrepareInputs(self.output, self.cfg)).with_outputs(SKIPPED, main="ok"))


def pipeline_options(runner: str, workers: int, beam_args: Sequence[str] = ()) -> PipelineOptions:
    """Beam options for `runner`; the DirectRunner runs `workers` processes (in this process when 1). Any standard
    Beam flag (--project, --region, --temp_location, --flink_master, ...) passes through in `beam_args`."""
    options = {"runner": runner}
    if runner == "DirectRunner":
        options.update(direct_num_workers=workers,
                       direct_running_mode="multi_processing" if workers > 1 else "in_memory")
    return PipelineOptions(list(beam_args), **options)


def run_pipeline(paths: Sequence[str], output: str, cfg: PrepareConfig, workers: int, runner: str,
                 beam_args: Sequence[str] = ()) -> dict[str, int]:
    """Prepares `paths` into `output` on `runner`; returns the pipeline's counters (name -> value) where the
    runner reports them."""
    for sub in ("shards", "done"):
        os.makedirs(os.path.join(output, sub), exist_ok=True)
    pipeline = beam.Pipeline(options=pipeline_options(runner, workers, beam_args))
    _ = pipeline | "inputs" >> beam.Create(sorted(paths)) | "emo-prepare" >> PrepareTransform(output, cfg)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as e:  # Beam reports a Ctrl-C inside a DoFn as a RuntimeError: give the caller the interrupt
        if _caused_by(e, KeyboardInterrupt):
            raise KeyboardInterrupt from e
        raise
    counters = _counters(result)
    if counters is None:
        log.info("the %s runner reports no Beam metrics; manifest.json counts every input and skip", runner)
        return {}
    totals: dict[str, int] = {}
    for c in counters:
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    log.info("Beam counters: %s", ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none")
    return totals


def _counters(result) -> list | None:
    """This pipeline's counters from a finished run, or None from a runner that keeps no metrics: its result
    class does not override Beam's base PipelineResult.metrics (which only raises)."""
    if type(result).metrics is PipelineResult.metrics:
        return None
    return result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]


def _caused_by(error: BaseException, kind: type) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind) or str(error).startswith(kind.__name__):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
