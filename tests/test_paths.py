"""A folder where a file belongs (and the reverse) is named as such, at every place a user passes a path."""
import pytest

from emo_jax.audio.decode import load_audio, open_audio
from emo_jax.config import load_config
from emo_jax.errors import AudioError, CheckpointError, ConfigError, VideoError
from emo_jax.interop.torch_io import find_weights_file, load_state_dict
from emo_jax.paths import require_file, require_folder
from emo_jax.train.checkpoint import restore_params
from emo_jax.video.io import read_video, video_info


def test_require_file_and_folder_name_what_the_path_is(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    require_file(str(tmp_path / "a.txt"), "notes", "fix")
    require_folder(str(tmp_path), "run", "fix")
    with pytest.raises(ValueError, match=r"^notes '.*' is a folder, not a file; pass a file$"):
        require_file(str(tmp_path), "notes", "pass a file")
    with pytest.raises(ValueError, match=r"^run '.*a.txt' is a file, not a folder; pass a folder$"):
        require_folder(str(tmp_path / "a.txt"), "run", "pass a folder")
    with pytest.raises(CheckpointError, match="does not exist"):
        require_file(str(tmp_path / "b"), "weights", "fix", CheckpointError)


@pytest.mark.parametrize("call, error, words", [
    (lambda d, f: load_config(d), ConfigError, "config file .* is a folder"),
    (lambda d, f: load_state_dict(d), CheckpointError, "checkpoint file .* is a folder"),
    (lambda d, f: find_weights_file(f), CheckpointError, "checkpoint folder .* is a file"),
    (lambda d, f: restore_params(f), CheckpointError, "checkpoint folder .* is a file"),
    (lambda d, f: load_audio(d), AudioError, "audio file .* is a folder"),
    (lambda d, f: open_audio(d), AudioError, "audio file .* is a folder"),
    (lambda d, f: read_video(d), VideoError, "video file .* is a folder"),
    (lambda d, f: video_info(d), VideoError, "video file .* is a folder"),
])
def test_commands_name_a_folder_given_for_a_file_and_the_reverse(tmp_path, call, error, words):
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"\0")
    with pytest.raises(error, match=words):
        call(str(tmp_path), str(a_file))
