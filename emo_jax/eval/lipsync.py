"""SyncNet confidence, offset and minimum distance of talking videos (EMO's Table 1 "SyncNet"), as emo-eval
computes them on each generated video; the network, crops, MFCCs and offset search are emo_jax/eval/syncnet.py's.

Per video: its frames resampled to 25 fps (iter_frames) and its first audio track decoded to 16 kHz mono and
quantised as pcm_s16le (load_audio, pcm16). BlazeFace (full-range, short-range where that finds nothing) finds faces
on every frame (on the detector's own small copy, detection_frame) and track_faces follows one face (the largest, then the box overlapping the last one
most), bridging up to 25 frames without a detection by linear interpolation, as syncnet_python's tracker does
(num_failed_det 25). A video is scored only if every frame has a tracked face. The crops, the windows and the
offset search (vshift 15) follow syncnet_python; the embeddings are computed in fixed-size batches sharded over the
devices (ShardedExtractor).

The video is decoded twice, so that memory does not grow with its length: once for the face boxes, once for the
crops, which are cut a chunk at a time and embedded as they come (face_crops' 13-frame box smoothing reaches 6
frames either side, so a chunk cut with 6 frames of margin on each side equals the same frames cut from the whole).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import numpy as np

from emo_jax.faces.detect import FaceDetector, detection_frame, make_detector, track_faces
from emo_jax.audio.decode import load_audio
from emo_jax.errors import AudioError
from emo_jax.eval.extract import ShardedExtractor
from emo_jax.eval.syncnet import (BOX_SMOOTHING, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, WINDOW_FRAMES, AudioEncoder,
                                  LipEncoder, SyncNet, audio_windows, face_crops, lip_windows, mfcc, pcm16,
                                  sync_offset, window_count)

DETECTOR = "blazeface"
MAX_GAP = 25  # frames a face track may go without a detection (syncnet_python's num_failed_det)
MIN_FRAMES = BOX_SMOOTHING // 2 + 1  # face_crops' shortest track


class NotScored(ValueError):
    """A video SyncNet cannot score (no audio, too short, a frame without a face); the message says why."""


class LipSyncScorer:
    """SyncNet's two encoders as extractors sharded over `devices`, `batch` windows a call, with the face detector."""

    def __init__(self, module: SyncNet, params: Any, batch: int, devices: Sequence[jax.Device] | None = None,
                 detector: FaceDetector | None = None):
        audio, lip = AudioEncoder(module.precision), LipEncoder(module.precision)
        self.audio = ShardedExtractor(lambda p, x: audio.apply({"params": p}, x), params["audio"], batch, devices)
        self.lip = ShardedExtractor(lambda p, x: lip.apply({"params": p}, x), params["lip"], batch, devices)
        self.detector = detector if detector is not None else make_detector(DETECTOR)

    def face_boxes(self, path: str) -> np.ndarray:
        """Face boxes [T, 4] in the pixels of the 25 fps frames, NaN where no face is tracked."""
        from emo_jax.video.io import iter_frames

        detections, scale = [], 1.0
        for frame in iter_frames(path, FPS):
            small, scale = detection_frame(frame, self.detector)
            detections.append(self.detector(small))
        # The detections were made while decoding, so that no frames are held: track_faces's "frames" are them and
        # its detector hands each back.
        boxes = track_faces(detections, [0], lambda found: found, every=1, max_gap=MAX_GAP)
        return boxes / scale

    def score(self, path: str) -> dict[str, Any]:
        """{video, frames, windows, offset, confidence, min_dist} of one video; NotScored if it has no audio, is too
        short, or has a frame without a tracked face."""
        try:
            samples = pcm16(load_audio(path, SAMPLE_RATE))
        except AudioError as e:
            raise NotScored(f"no audio to score: {e}") from e
        boxes = self.face_boxes(path)
        frames = len(boxes)
        windows = window_count(frames, len(samples))
        if windows == 0 or frames < MIN_FRAMES:
            raise NotScored(f"too short: {frames} frames at {FPS} fps and {len(samples) / SAMPLE_RATE:.2f} s of audio; "
                            f"SyncNet needs {MIN_FRAMES} frames and {WINDOW_FRAMES + 1} frames' worth of audio "
                            f"({(WINDOW_FRAMES + 1) * SAMPLES_PER_FRAME / SAMPLE_RATE:.2f} s)")
        faceless = np.flatnonzero(np.isnan(boxes[:, 0]))
        if len(faceless):
            raise NotScored(f"no face tracked in {len(faceless)} of {frames} frames at {FPS} fps (the first: frame "
                            f"{faceless[0]}); SyncNet scores only videos with a face in every frame")
        audio = self.audio(audio_windows(mfcc(samples), range(windows)))
        video = self._lip_embeddings(path, boxes, windows)
        result = sync_offset(audio, video)
        return {"video": path, "frames": frames, "windows": windows, "offset": result.offset,
                "confidence": result.confidence, "min_dist": result.min_dist}

    def _lip_embeddings(self, path: str, boxes: np.ndarray, windows: int) -> np.ndarray:
        """Embeddings [windows, 1024] of the 5-frame crop windows at frames 0 .. windows - 1."""
        held = np.zeros((0, 0, 0, 3), np.uint8)  # crops of frames [first, first + len(held))
        first, out = 0, []
        for crops in _crop_chunks(path, boxes, self.lip.batch_size):
            held = np.concatenate([held, crops]) if len(held) else crops
            ready = min(windows, first + len(held) - WINDOW_FRAMES + 1)  # windows whose frames are all held
            if ready > first:
                out.append(self.lip(lip_windows(held, range(ready - first))))
                held, first = held[ready - first:], ready
            if first == windows:  # the frames left are in no window (the audio may end before the video)
                break
        assert first == windows, (first, windows)
        return np.concatenate(out)


def _crop_chunks(path: str, boxes_T4: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """face_crops(all frames, boxes_T4), `chunk` frames at a time, from a second decoding of the video."""
    from emo_jax.video.io import iter_frames

    reach = BOX_SMOOTHING // 2
    total = len(boxes_T4)
    held: list[np.ndarray] = []  # frames [done - reach (or 0), ...)
    done = 0  # crops handed out: frames [0, done)
    for index, frame in enumerate(iter_frames(path, FPS)):
        assert index < total, f"{path}: more frames on the second decoding than the {total} of the first"
        held.append(frame)
        if index + 1 == min(done + chunk + reach, total):  # the chunk's frames and those its crops' boxes reach
            lo = max(0, done - reach)
            end = done + chunk if index + 1 < total else total
            crops = face_crops(np.stack(held), boxes_T4[lo:index + 1])
            yield crops[done - lo:end - lo]
            done = end
            held = held[max(0, done - reach) - lo:]
    assert done == total, f"{path}: fewer frames on the second decoding than the {total} of the first"
