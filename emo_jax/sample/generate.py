"""One portrait + one audio file -> a talking-head mp4 with the audio muxed in: the pipeline of emo-generate, whose
command line is emo_jax/cli/generate.py."""
from __future__ import annotations

import argparse
import os
import uuid
from typing import Any, Callable

import numpy as np

from emo_jax.errors import ConfigError, UsageError

# Head rotation speed (degrees per frame) used when a speed model gets no --speed: the median frame of the real
# talking-head clips configs/emo_512.py's model.speed buckets were chosen from.
DEFAULT_SPEED = 0.35


def parse_face_box(text: str) -> np.ndarray:
    """'x0,y0,x1,y1' -> float32 [4]; anything else is an error showing the expected form."""
    try:
        box = np.asarray([float(v) for v in text.split(",")], np.float32)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not (box[0] < box[2] and box[1] < box[3]):
        raise ValueError(f"--face-box {text!r}: expected x0,y0,x1,y1 in pixels with x0 < x1 and y0 < y1, "
                         "e.g. --face-box 180,120,340,320")
    return box


def detect_face(image_HW3: np.ndarray, path: str, detector: str = "blazeface") -> np.ndarray:
    """The largest face box (x0, y0, x1, y1) `detector` (emo_jax/faces/detect.py DETECTORS) finds, in image pixels,
    found on the copy emo-prepare detects on."""
    from emo_jax.faces.detect import detection_frame, largest, make_detector

    found = make_detector(detector)
    small, scale = detection_frame(image_HW3, found)
    boxes = found(small) / scale
    if not len(boxes):
        raise ValueError(f"no face found in {path!r}; pass the face region yourself with --face-box x0,y0,x1,y1 "
                         "(pixels of the image)")
    return largest(boxes)


def frame_reference(image_HW3: np.ndarray, box: np.ndarray, size: int, face_expand: float,
                    mask_expand: float) -> tuple[np.ndarray, np.ndarray]:
    """(reference [size, size, 3], face mask [size, size] float32) of a portrait whose face is `box`.

    The portrait is framed as emo-prepare frames a still face (data_pipeline.crop.frame_face with
    config.data.face_expand), so the reference looks like a training frame. The mask is that framing's mask with
    the box grown `mask_expand` (config.sample.mask_expand) times: it must hold the head wherever it moves in
    the whole video, which one still box does not.
    """
    from data_pipeline.crop import frame_face

    h, w = image_HW3.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"face box {box.tolist()} lies outside the {w}x{h} image; give x0,y0,x1,y1 in its pixels")
    framing = frame_face(np.asarray(box, np.float32)[None], w, h, face_expand, size)
    return framing.frame(image_HW3), framing.mask(mask_expand).astype(np.float32)


def load_speed(text: str | None, num_frames: int) -> np.ndarray:
    """Per-frame speeds [num_frames] from a number or a .npy/.txt curve (longer curves are cut)."""
    if text is None:
        return np.full(num_frames, DEFAULT_SPEED, np.float32)
    try:
        return np.full(num_frames, float(text), np.float32)
    except ValueError:
        pass
    if not os.path.isfile(text):
        raise ValueError(f"--speed {text!r} is neither a number nor an existing .npy/.txt file")
    try:
        curve = np.load(text) if text.endswith(".npy") else np.loadtxt(text, ndmin=1)
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot read speeds from {text!r} ({e}); give a .npy array or a text file of numbers") from e
    curve = np.asarray(curve, np.float32).reshape(-1)
    if len(curve) < num_frames or not np.isfinite(curve).all():
        raise ValueError(f"--speed {text!r} holds {len(curve)} values (finite: {bool(np.isfinite(curve).all())}); "
                         f"the video has {num_frames} frames, so give at least {num_frames} finite values")
    return curve[:num_frames]


def check_audio_length(num_samples: int, fps: float, path: str, min_samples: int = 1) -> int:
    """round(duration * fps) of `num_samples` at 16 kHz, or an error naming the file when that is no frame or too
    short to encode."""
    from emo_jax.audio.features import video_frame_count

    frames = video_frame_count(num_samples, fps)
    if frames == 0:
        raise ValueError(f"audio {path!r} lasts {num_samples / 16:.1f} ms, shorter than one video frame at "
                         f"{fps:g} fps ({1000 / fps:.1f} ms); pass a longer audio file")
    if num_samples < min_samples:
        raise ValueError(f"audio {path!r} lasts {num_samples / 16:.1f} ms, shorter than the audio encoder's "
                         f"{min_samples / 16:.0f} ms window; pass a longer audio file")
    return frames


def check_output(path: str, flag: str, suffix: str) -> None:
    """Refuses an output path that could not be written, before any model work: the suffix, not a directory, and
    a folder that exists or can be made, where a file can be created (a temporary one is made and removed)."""
    example = os.path.join(path, f"out{suffix}") if os.path.isdir(path) else f"{os.path.splitext(path)[0]}{suffix}"
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory; give a file path in it, e.g. {flag} {example}")
    if not path.lower().endswith(suffix):
        raise UsageError(f"{flag} {path!r} must end in {suffix}, e.g. {flag} {example}")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):  # the folders to be made are made where the nearest existing one is
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {path!r}: {existing!r} is a file, so the folder {folder!r} cannot be made; give a "
                         "path under a folder")
    probe = os.path.join(existing, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.probe")
    try:
        open(probe, "x").close()
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"{flag} {path!r}: cannot write in {existing!r} ({e.strerror}); give a path in a folder "
                         "you can write to") from e


def random_model_params(config, seed: int = 0) -> dict:
    """A fresh EMO parameter tree from a fixed seed, for smoke tests (no weights read)."""
    import flax.linen as nn

    from emo_jax.config import model_config
    from emo_jax.models.emo import EMO, example_inputs
    from emo_jax.models.partitioning import init_params

    cfg = model_config(config)
    return nn.unbox(init_params(EMO(cfg), seed, example_inputs(cfg, 1, 1, config.model.latent_size)))


def generate(args: argparse.Namespace, config, restore_model: Callable[[str, Any], dict]) -> str:
    """Runs the whole pipeline for parsed arguments; returns a one-line summary. `restore_model(checkpoint,
    config)` gives the trained parameters (emo-generate passes emo_jax.train.checkpoint's).

    Host memory is the same for any audio length: the audio is decoded again for each pass instead of held, its
    features are computed window by window as the clips need them, and each chunk's frames are written (and the
    contact sheet's picks kept) as soon as they are decoded.
    """
    from tqdm import tqdm

    from emo_jax import encoders
    from emo_jax.audio.decode import open_audio
    from emo_jax.audio.features import audio_feature_stream
    from emo_jax.models.vae_codec import VAECodec
    from emo_jax.sample.sampler import Sampler, check_video_model
    from emo_jax.video.image import read_image
    from emo_jax.video.io import ContactSheet, VideoWriter

    if args.random_init == bool(args.checkpoint):
        raise ConfigError("pass exactly one of --checkpoint DIR (trained weights) and --random-init (smoke test)")
    check_output(args.out, "--out", ".mp4")
    if args.contact_sheet:
        check_output(args.contact_sheet, "--contact-sheet", ".png")
    s = config.sample
    s.steps = args.steps if args.steps is not None else s.steps
    s.ref_scale = args.ref_scale if args.ref_scale is not None else s.ref_scale
    s.audio_scale = args.audio_scale if args.audio_scale is not None else s.audio_scale
    fps = config.data.fps if args.fps is None else args.fps
    if not fps > 0:
        raise ConfigError(f"--fps must be positive, got {fps}")
    if not (config.data.face_expand >= 1 and s.mask_expand > 0):
        raise ConfigError(f"--config.data.face_expand must be >= 1 and --config.sample.mask_expand > 0, got "
                          f"{config.data.face_expand} and {s.mask_expand}")
    seed = config.seed if args.seed is None else args.seed
    cfg = check_video_model(config)
    if args.speed is not None and not cfg.unet.speed_attention:
        raise ConfigError(f"--speed needs a model with speed layers; config variant {config.get('variant')!r} has "
                          "none (use a stage3 config)")

    image = read_image(args.image)
    box = parse_face_box(args.face_box) if args.face_box else detect_face(image, args.image, args.detector)
    reference, mask = frame_reference(image, box, config.data.size, config.data.face_expand, s.mask_expand)
    audio = open_audio(args.audio)
    num_frames = check_audio_length(audio.num_samples, fps, args.audio)  # before any model is loaded or compiled
    encoder, encoder_params, w2v = encoders.audio_encoder(config, random_init=args.random_init)
    check_audio_length(audio.num_samples, fps, args.audio, w2v.receptive_field_samples)
    signals = {"speed": load_speed(args.speed, num_frames)} if "speed" in cfg.frame_signals else {}

    params = random_model_params(config) if args.random_init else restore_model(args.checkpoint, config)
    sampler = Sampler(config, params)
    vae_module, vae_params, vae_cfg = encoders.vae(config, random_init=args.random_init)
    if config.data.size != config.model.latent_size * vae_cfg.downsample_factor:
        raise ConfigError(f"data.size {config.data.size} must equal model.latent_size {config.model.latent_size} x "
                          f"the VAE's factor {vae_cfg.downsample_factor}")
    codec = VAECodec(vae_module, vae_params, chunk=config.model.clip_frames)
    ref = sampler.reference(codec.encode(reference[None]))
    features = audio_feature_stream(audio, fps, encoder, encoder_params, context=cfg.audio.context,
                                    window_seconds=config.audio.window_seconds)
    assert len(features) == num_frames

    sheet = ContactSheet(num_frames) if args.contact_sheet else None
    size = config.data.size
    with (VideoWriter(args.out, fps, size, size, audio=audio.blocks()) as video,
          tqdm(total=sampler.num_clips(num_frames), unit="clip", desc="emo-generate") as bar):
        for latents in sampler.stream(ref, features, mask, seed, s.ref_scale, s.audio_scale, signals):
            frames = codec.decode(latents)
            video.write(frames)
            if sheet is not None:
                sheet.add(frames)
            bar.update(min(s.clips_per_chunk, bar.total - bar.n))
    if sheet is not None:
        sheet.save(args.contact_sheet)
    return (f"wrote {args.out}: {video.frames_written} frames at {fps:g} fps, {audio.num_samples / 16000:.2f} s of "
            f"audio, seed {seed}")
