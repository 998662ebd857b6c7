"""emo-prepare: raw talking-head videos -> ArrayRecord shards of segment records, plus manifest.json.

Layout of --output:
    config.json                 the settings; a second run must use the same ones
    shards/<input-id>.array_record   one shard per input video, one record per segment (schema.py)
    done/<input-id>.json        written atomically after the input's shard is complete (or the input skipped)
    manifest.json               totals, shard list, skipped inputs with reasons

An input with a done-marker is never processed again, so an interrupted run resumes where it stopped and a
finished run re-run is a no-op. To retry a skipped input, delete its done/ file. One emo-prepare per folder: a
run holds an exclusive lock on <output>/.lock (released by the system when the process ends, however it ends),
and a second run on the same folder stops with a message instead of deleting the first one's files in progress.
A run that stops on a setting (an encoder folder that does not load, say) before any input is done leaves no
config.json behind, so the folder can be used again with other settings.

Inputs run as an Apache Beam pipeline (data_pipeline/beam_prepare.py): --runner DirectRunner (the default)
with --workers local processes, or any Beam runner (Dataflow, Flink, Spark) whose workers see the output folder;
--runner inline prepares in the calling process without Beam. Every runner writes the same shard bytes.

--wav2vec DIR and --vae DIR (local Hugging Face / diffusers folders) add per-frame audio features and VAE
latents to every record (schema.py). Their absolute paths are settings like any other; each worker process
loads the models once (in the Beam DoFn's setup). JAX runs them on the default backend: with several workers on
one GPU, set XLA_PYTHON_CLIENT_PREALLOCATE=false so the processes share its memory.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import socket
import traceback
from typing import Iterator, Sequence

from array_record.python.array_record_module import ArrayRecordWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data_pipeline.encoders import SegmentEncoders
from data_pipeline.extract import PrepareConfig, SkipInput, extract_segments
from emo_jax.faces.detect import FaceDetector, make_detector
from data_pipeline.schema import SCHEMA_VERSION, encode_record
from data_pipeline.speed import ESTIMATORS, SpeedEstimator, make_speed_estimator
from emo_jax.errors import UsageError

log = logging.getLogger("emo-prepare")

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
# group_size 1: every record is its own chunk, so a random read decodes one segment only. JPEG bytes do not
# compress, so compression would cost time for nothing.
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"
INLINE = "inline"  # the runner that prepares in the calling process, without Beam


def find_inputs(spec: str) -> list[str]:
    """Video files under a folder (recursively) or matching a glob, sorted."""
    if os.path.isdir(spec):
        paths = [os.path.join(root, f) for root, _, files in os.walk(spec) for f in files
                 if f.lower().endswith(VIDEO_EXTENSIONS)]
    else:
        paths = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
    if not paths:
        raise ValueError(f"no input videos found for --input {spec!r}; pass a folder or a glob like 'raw/**/*.mp4'")
    return sorted(paths)


def input_id(path: str) -> str:
    """A file-name-safe id, readable and unique per absolute path."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(path))[0])[:40]
    return f"{stem}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]}"


def _write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_TOOLS: dict[tuple[str, ...], tuple[FaceDetector, SpeedEstimator, SegmentEncoders]] = {}


def worker_tools(cfg: PrepareConfig) -> tuple[FaceDetector, SpeedEstimator, SegmentEncoders]:
    """Detector, speed estimator and encoders, built once per worker process for the run's settings."""
    key = (cfg.detector, cfg.speed_estimator, cfg.wav2vec, cfg.vae)
    if key not in _TOOLS:
        _TOOLS.clear()  # another run's encoders in this process: free them before loading these
        _TOOLS[key] = (make_detector(cfg.detector), make_speed_estimator(cfg.speed_estimator),
                       SegmentEncoders(cfg.wav2vec, cfg.vae))
    return _TOOLS[key]


def process_input(path: str, output: str, cfg: PrepareConfig) -> dict:
    """Turns one input into its shard and done-marker; never raises for a bad input. Returns the marker."""
    ident = input_id(path)
    shard = os.path.join(output, "shards", ident + ".array_record")
    marker = {"input": path, "id": ident, "status": "ok", "segments": 0, "frames": 0, "handled": []}
    tmp = f"{os.path.join(output, 'shards', '.' + ident)}.{os.getpid()}.tmp"
    # Outside the try: an encoder folder that does not load is the run's problem, not this input's.
    detector, estimator, encoders = worker_tools(cfg)
    try:
        writer = ArrayRecordWriter(tmp, ARRAY_RECORD_OPTIONS)
        try:
            for record in extract_segments(path, cfg, detector, estimator, encoders, marker["handled"]):
                writer.write(encode_record(record))
                marker["segments"] += 1
                marker["frames"] += record.num_frames
        finally:
            writer.close()
        os.replace(tmp, shard)
        marker["shard"] = os.path.relpath(shard, output)
    except SkipInput as e:
        marker.update(status="skipped", reason=e.reason, detail=e.detail, segments=0, frames=0)
    except Exception as e:  # a bug or an exotic file must not stop the job: record it and go on
        log.error("error on %s:\n%s", path, traceback.format_exc())
        marker.update(status="skipped", reason="error", detail=f"{type(e).__name__}: {e}", segments=0, frames=0)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _write_json_atomic(marker_path(output, path), marker)
    return marker


def _run_inputs(pending: Sequence[str], output: str, cfg: PrepareConfig, workers: int, runner: str,
                beam_args: Sequence[str], done_before: int) -> None:
    """Processes the pending inputs: in this process one after the other ("inline"), or as the Beam pipeline of
    data_pipeline/beam_prepare.py on `runner` (the DirectRunner runs `workers` local processes)."""
    if runner == INLINE:
        bar = tqdm(total=done_before + len(pending), initial=done_before, unit="video", desc="emo-prepare")
        with logging_redirect_tqdm(), bar:  # log lines print above the bar instead of through it
            for path in pending:
                log_marker(process_input(path, output, cfg))
                bar.update()
        return
    from data_pipeline.beam_prepare import run_pipeline

    run_pipeline(pending, output, cfg, workers, runner, beam_args)


def check_runner(runner: str, workers: int) -> None:
    """UsageError when the runner cannot run here: Beam missing, or several workers asked of the inline runner."""
    if workers < 1:
        raise UsageError(f"--workers {workers}: give 1 or more")
    if runner == INLINE:
        if workers > 1:
            raise UsageError(f"--runner {INLINE} prepares in this one process; for --workers {workers} use "
                             "--runner DirectRunner (pip install -c constraints.txt -e '.[beam]')")
        return
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        raise UsageError(f"--runner {runner} needs Apache Beam: pip install -c constraints.txt -e '.[beam]' "
                         f"(or --runner {INLINE} to prepare in this process without it)") from None


def log_marker(marker: dict) -> None:
    if marker["status"] == "ok":
        extra = f" ({', '.join(marker['handled'])})" if marker["handled"] else ""
        log.info("%s: %d segments, %d frames%s", marker["input"], marker["segments"], marker["frames"], extra)
    else:
        log.warning("skipped %s: %s (%s)", marker["input"], marker["reason"], marker["detail"])


def build_manifest(markers: Sequence[dict], cfg: PrepareConfig) -> dict:
    """Totals over all inputs' done-markers."""
    ok = [m for m in markers if m["status"] == "ok" and m["segments"]]
    skipped = [m for m in markers if m["status"] != "ok"]
    frames = sum(m["frames"] for m in ok)
    return {
        "schema_version": SCHEMA_VERSION,
        "config": dataclasses.asdict(cfg),
        "speed_unit": ESTIMATORS[cfg.speed_estimator].unit,  # of every record's `speed`
        "inputs": len(markers),
        "segments": sum(m["segments"] for m in ok),
        "frames": frames,
        "hours": frames / cfg.fps / 3600.0,
        "shards": sorted(m["shard"] for m in ok),
        "skipped_counts": dict(sorted(collections.Counter(m["reason"] for m in skipped).items())),
        "skipped": sorted(({"input": m["input"], "reason": m["reason"], "detail": m["detail"]} for m in skipped),
                          key=lambda m: m["input"]),
        "handled_counts": dict(sorted(collections.Counter(h for m in ok for h in m["handled"]).items())),
    }


def _check_config(output: str, cfg: PrepareConfig) -> bool:
    """Compares the settings with the folder's config.json, or writes it; True when written now."""
    path = os.path.join(output, "config.json")
    wanted = {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(cfg)}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
        if existing != wanted:
            changed = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
            raise ValueError(f"--output {output!r} was prepared with other settings ({', '.join(changed)}); "
                             "use a new --output folder or the same settings")
        return False
    _write_json_atomic(path, wanted)
    return True


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[None]:
    """Holds an exclusive lock on the output folder, or raises UsageError naming the run that holds it."""
    with open(os.path.join(output, ".lock"), "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UsageError(f"--output {output!r} is being written by another emo-prepare ({holder}); wait for "
                             "it to finish, or pass another --output folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield


def marker_path(output: str, path: str) -> str:
    """Where the done-marker of input `path` lives in the output folder."""
    return os.path.join(output, "done", input_id(path) + ".json")


def read_marker(output: str, path: str) -> dict | None:
    """The done-marker of input `path`, or None when it has none (not processed yet)."""
    try:
        with open(marker_path(output, path), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def prepare(inputs: Sequence[str], output: str, cfg: PrepareConfig, workers: int = 1, runner: str = "DirectRunner",
            beam_args: Sequence[str] = ()) -> dict:
    """Processes every input without a done-marker, then writes and returns the manifest.

    runner: "DirectRunner" (Beam, `workers` local processes), any other Beam runner with its options in
    `beam_args`, or "inline" (this process, one input after the other, no Beam needed). The shards' bytes are the
    same whichever runs them."""
    check_runner(runner, workers)
    cfg = cfg.with_absolute_paths()
    cfg.validate()
    # A missing model file or package stops the run here, before the output is touched.
    make_detector(cfg.detector)
    make_speed_estimator(cfg.speed_estimator)
    for sub in ("shards", "done"):
        os.makedirs(os.path.join(output, sub), exist_ok=True)
    with output_lock(output):
        return _prepare_locked(inputs, output, cfg, workers, runner, beam_args)


def _prepare_locked(inputs: Sequence[str], output: str, cfg: PrepareConfig, workers: int, runner: str,
                    beam_args: Sequence[str]) -> dict:
    wrote_config = _check_config(output, cfg)
    for stale in glob.glob(os.path.join(output, "shards", ".*.tmp")):
        os.remove(stale)  # left by a killed run; that input has no done-marker and is redone below
    markers: dict[str, dict] = {}
    pending = []
    for path in inputs:
        marker = read_marker(output, path)
        if marker is None:
            pending.append(path)
        else:
            markers[path] = marker
    log.info("%d inputs: %d done before, %d to process", len(inputs), len(markers), len(pending))
    try:
        if pending:
            _run_inputs(pending, output, cfg, workers, runner, beam_args, len(markers))
    except BaseException:
        if wrote_config and not os.listdir(os.path.join(output, "done")):
            os.remove(os.path.join(output, "config.json"))  # nothing was prepared with these settings
        raise
    for path in pending:  # every worker wrote its inputs' markers; the driver reads them back, on any runner
        markers[path] = read_marker(output, path)
        if markers[path] is None:
            raise RuntimeError(f"the {runner} pipeline finished but {path} has no done-marker "
                               f"({marker_path(output, path)}); its workers must write to the same --output folder "
                               "this process reads. Re-run to prepare the inputs left")
    manifest = build_manifest([markers[p] for p in inputs], cfg)
    manifest_path = os.path.join(output, "manifest.json")
    previous = None
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            previous = json.load(f)
    if previous != manifest:
        _write_json_atomic(manifest_path, manifest)
    return manifest
