"""MetricsWriter: one row per logged step, also after a resume from a step older than the last logged one."""
import json

from emo_jax.train.metrics import MetricsWriter


def _record(writer, steps):
    for step in steps:
        writer.record({"step": step, "finite": True, "loss": float(step), "grad_norm": 1.0, "lr": 1e-4,
                       "skipped": 0})


def test_resume_drops_the_rows_after_the_restored_step(tmp_path):
    writer = MetricsWriter(str(tmp_path), total_steps=8, global_batch=1, every=1)
    _record(writer, range(1, 7))
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # killed mid-line

    writer = MetricsWriter(str(tmp_path), total_steps=8, global_batch=1, every=1, resume_step=4)
    _record(writer, range(5, 9))
    writer.close()

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["loss"] for r in rows] == [float(s) for s in range(1, 9)]


def test_a_fresh_run_keeps_an_existing_file_untouched_when_nothing_is_stale(tmp_path):
    writer = MetricsWriter(str(tmp_path), total_steps=4, global_batch=1, every=2)
    _record(writer, range(1, 5))
    writer.close()
    before = (tmp_path / "metrics.jsonl").read_text()
    MetricsWriter(str(tmp_path), total_steps=4, global_batch=1, every=2, resume_step=4).close()
    assert (tmp_path / "metrics.jsonl").read_text() == before


def _events(path) -> list:
    """The Event protos of one TensorBoard event file (TFRecord framing: length, its CRC, the data, its CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        events.append(Event.FromString(data[at + 12:at + 12 + length]))
        at += 12 + length + 4
    return events


def test_resume_tells_tensorboard_to_hide_the_stale_events(tmp_path):
    writer = MetricsWriter(str(tmp_path), total_steps=8, global_batch=1, every=1)
    _record(writer, range(1, 7))
    writer.close()
    first = set(tmp_path.glob("events.out.tfevents.*"))
    writer = MetricsWriter(str(tmp_path), total_steps=8, global_batch=1, every=1, resume_step=4)
    _record(writer, range(5, 9))
    writer.close()
    (second,) = set(tmp_path.glob("events.out.tfevents.*")) - first
    # TensorBoard drops the events of earlier files from a START session log's step on (its purge_step).
    starts = [e.step for e in _events(second) if e.HasField("session_log") and e.session_log.status == 1]
    assert starts == [5]
    scalars = sorted({e.step for e in _events(second) if e.HasField("summary")})
    assert scalars == [5, 6, 7, 8]
