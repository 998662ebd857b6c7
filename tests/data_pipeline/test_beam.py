"""emo-prepare on Apache Beam: the DirectRunner with one and two worker processes and the inline runner write the
same shard bytes and manifest; skips are counted in Beam's metrics; a run killed mid-way resumes to the same
output; the runner settings that cannot work are refused with the fix."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import data_pipeline.prepare as prepare_module
from data_pipeline import beam_prepare
from data_pipeline.beam_prepare import pipeline_options, run_pipeline
from data_pipeline.loader import shard_paths, shard_records
from data_pipeline.prepare import INLINE, check_runner, input_id, prepare
from emo_jax.cli.prepare import main
from emo_jax.errors import UsageError
from synthetic_videos import TEST_CONFIG

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _shards(output) -> dict[str, bytes]:
    folder = os.path.join(output, "shards")
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_one_and_two_workers_and_inline_write_the_same_records(prepared, tmp_path):
    inputs, two_workers, manifest = prepared  # the DirectRunner with two worker processes
    paths = sorted(inputs.values())
    one = prepare(paths, str(tmp_path / "one"), TEST_CONFIG, workers=1)
    inline = prepare(paths, str(tmp_path / "inline"), TEST_CONFIG, runner=INLINE)
    assert one == inline == manifest  # counts, shards and every skipped input with its reason
    assert manifest["skipped_counts"] == {"no_audio": 1, "no_face": 1, "too_short": 1, "unreadable": 1}
    want = _shards(two_workers)
    assert len(want) == 4 and _shards(tmp_path / "one") == want and _shards(tmp_path / "inline") == want
    assert len(shard_records(shard_paths(str(two_workers)))) == manifest["segments"]  # what the loader reads


def test_beam_counts_segments_and_skips_by_reason(prepared, tmp_path):
    inputs, _, manifest = prepared
    counters = run_pipeline(sorted(inputs.values()), str(tmp_path), TEST_CONFIG.with_absolute_paths(), 1,
                            "DirectRunner")
    assert counters == {"inputs_ok": 4, "segments": manifest["segments"], "frames": manifest["frames"],
                        "skipped_no_audio": 1, "skipped_no_face": 1, "skipped_too_short": 1,
                        "skipped_unreadable": 1}


def test_a_killed_two_worker_run_resumes_without_lost_or_duplicate_segments(prepared, tmp_path):
    """The run is killed (SIGKILL, driver and both workers) as soon as its first input is done, then resumed: the
    output equals an uninterrupted run's, byte for byte, with no temporary file left."""
    inputs, straight, manifest = prepared  # the same inputs prepared in one go
    paths = sorted(inputs.values())
    output = tmp_path / "out"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from synthetic_videos import TEST_CONFIG; "
              "from data_pipeline.prepare import prepare; prepare(sys.argv[3:], sys.argv[2], TEST_CONFIG, workers=2)")
    run = subprocess.Popen([sys.executable, "-c", script, HERE, str(output), *paths],
                           env=dict(os.environ, PYTHONPATH=ROOT), start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    done = output / "done"
    deadline = time.monotonic() + 300
    while not (done.is_dir() and any(name.endswith(".json") for name in os.listdir(done))):
        assert run.poll() is None, run.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no input was prepared within 5 minutes"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    killed_at = [name for name in os.listdir(done) if name.endswith(".json")]
    assert 1 <= len(killed_at) < len(paths) and not (output / "manifest.json").exists()
    # What was done before the kill, with the times it was written: the resumed run must not do it again.
    before = {name: (done / name).stat().st_mtime_ns for name in killed_at}
    shards_before = {m["shard"]: (output / m["shard"]).stat().st_mtime_ns
                     for m in (json.loads((done / name).read_text()) for name in killed_at) if "shard" in m}
    assert prepare(paths, str(output), TEST_CONFIG, workers=2) == manifest
    assert _shards(output) == _shards(straight)  # nothing lost, nothing twice, no leftovers
    assert {name: (done / name).stat().st_mtime_ns for name in killed_at} == before
    assert {shard: (output / shard).stat().st_mtime_ns for shard in shards_before} == shards_before


def test_ctrl_c_in_a_beam_worker_is_an_interrupt_and_leaves_the_folder_reusable(prepared, tmp_path, monkeypatch):
    inputs, _, _ = prepared

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "extract_segments", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare([inputs["still"]], str(tmp_path), TEST_CONFIG, workers=1)
    assert os.listdir(tmp_path / "done") == [] and not (tmp_path / "config.json").exists()


def test_runner_settings_that_cannot_work_are_refused_with_the_fix(monkeypatch):
    with pytest.raises(UsageError, match=r"--runner inline prepares in this one process; for --workers 2 use "
                                         r"--runner DirectRunner"):
        check_runner(INLINE, 2)
    with pytest.raises(UsageError, match="--workers 0"):
        check_runner("DirectRunner", 0)
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if the beam extra were not installed
    with pytest.raises(UsageError, match=r"needs Apache Beam: pip install -c constraints.txt -e '.\[beam\]'"):
        check_runner("DirectRunner", 1)
    check_runner(INLINE, 1)
    assert prepare_module.INLINE == "inline"


def test_beam_options_pass_through_to_the_runner():
    from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, StandardOptions

    options = pipeline_options("DataflowRunner", 1, ["--project", "p", "--region", "europe-west4",
                                                     "--temp_location", "gs://b/tmp"])
    cloud = options.view_as(GoogleCloudOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (cloud.project, cloud.region, cloud.temp_location) == ("p", "europe-west4", "gs://b/tmp")
    direct = pipeline_options("DirectRunner", 2).view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (2, "multi_processing")


def test_cli_refuses_workers_on_the_inline_runner_without_a_traceback(prepared, tmp_path, capsys):
    inputs, _, _ = prepared
    status = main(["--input", inputs["still"], "--output", str(tmp_path / "out"), "--runner", "inline",
                   "--workers", "2"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "--runner inline prepares in this one process; for --workers 2 use --runner DirectRunner" in err
    assert not (tmp_path / "out").exists()


def test_cli_hands_beam_options_after_a_double_dash_to_the_pipeline(prepared, tmp_path, monkeypatch):
    inputs, _, _ = prepared
    seen = []
    real = beam_prepare.run_pipeline
    monkeypatch.setattr(beam_prepare, "run_pipeline", lambda *a: seen.append(a[3:]) or real(*a))
    status = main(["--input", inputs["still"], "--output", str(tmp_path / "out"), "--size", "64", "--fps", "30",
                   "--min-seconds", "2", "--max-seconds", "4", "--", "--direct_running_mode=in_memory"])
    assert status == 0 and seen == [(1, "DirectRunner", ["--direct_running_mode=in_memory"])]


def test_counters_of_a_runner_without_metrics_are_none():
    """A runner whose result keeps no metrics (Beam's base PipelineResult.metrics) gives None, not an error; one
    that keeps them gives this pipeline's counters."""
    from apache_beam.runners.runner import PipelineResult, PipelineState

    class NoMetrics(PipelineResult):
        pass

    assert beam_prepare._counters(NoMetrics(PipelineState.DONE)) is None
    pipeline = beam_prepare.beam.Pipeline(runner="DirectRunner")
    _ = pipeline | beam_prepare.beam.Create([1, 2]) | beam_prepare.beam.Map(
        lambda x: beam_prepare.Metrics.counter(beam_prepare.NAMESPACE, "seen").inc())
    counters = beam_prepare._counters(pipeline.run())
    assert sum(c.committed for c in counters if c.key.metric.name == "seen") == 2
