"""emo-prepare takes frame rate, crop size, face framing, audio sample rate and wav2vec2 window from --config; flags
override."""
import json

from emo_jax.cli.prepare import main


def _settings(tmp_path, name: str, args: list[str]) -> dict:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "broken.mp4").write_bytes(b"not a video")  # skipped as unreadable: the settings are what is checked
    out = tmp_path / name
    assert main(["--input", str(raw), "--output", str(out), *args]) == 1  # nothing could be prepared
    return json.loads((out / "config.json").read_text())


def test_settings_come_from_the_config_and_flags_override_them(tmp_path):
    tiny = _settings(tmp_path, "tiny", ["--config", "configs/tiny.py", "--fps", "20"])
    assert (tiny["fps"], tiny["size"], tiny["audio_sample_rate"]) == (20.0, 32, 16000)
    assert tiny["audio_window_seconds"] == 10.0
    default = _settings(tmp_path, "default",
                        ["--config.audio.window_seconds", "25", "--config.data.face_expand", "1.5"])
    assert (default["fps"], default["size"], default["audio_window_seconds"]) == (30.0, 512, 25.0)
    assert (tiny["face_expand"], default["face_expand"]) == (2.0, 1.5)  # emo-generate reads data.face_expand too
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert manifest["skipped_counts"] == {"unreadable": 1} and manifest["segments"] == 0
