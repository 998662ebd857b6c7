"""Video files: reading, writing with audio, metadata and contact sheets."""
from emo_jax.video.io import VideoInfo, contact_sheet, iter_frames, read_video, video_info, write_video

__all__ = ["VideoInfo", "contact_sheet", "iter_frames", "read_video", "video_info", "write_video"]
