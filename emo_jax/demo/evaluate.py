"""Generation on held-out audio with emo-generate's pieces, and the demo's measures of what came out: identity, lip
sync and continuity (stage 2), head speed against the speed setting (stage 3 against stage 2, EMO's Table 2) and
where the face lands against a moved or widened face mask (the face locator, EMO's Figure 7)."""
from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from emo_jax import encoders
from emo_jax.audio.decode import load_audio
from emo_jax.audio.features import audio_features
from emo_jax.demo.metrics import (continuity, face_patches, face_pose_of, head_roll, identity_accuracy,
                                  mouth_opening, pearson, roll_velocity, share_inside)
from emo_jax.demo.synthetic import Identity, loudness_per_frame
from emo_jax.models.vae_codec import VAECodec
from emo_jax.sample.generate import detect_face, frame_reference
from emo_jax.sample.sampler import Sampler
from emo_jax.train.checkpoint import restore_model
from emo_jax.video.image import read_image
from emo_jax.video.io import contact_sheet, write_video

SHEET_COLUMNS = 12  # the reference crop, then 11 evenly spaced generated frames per row
SHEET_ZOOM = 4  # 32 px frames are too small to judge by eye


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """The measures of one identity's generated video on its held-out audio."""

    identity: str
    frames: int
    identity_accuracy: float
    lip_sync: float  # pearson(mouth opening, loudness) with the real audio
    lip_sync_control: float  # the same, generated from the audio zeroed (silence)
    boundary_change: float  # mean |frame change| across clip boundaries
    inside_change: float  # mean |frame change| inside clips


class Generator:
    """emo-generate's path from portrait + audio to frames, loaded once for many videos."""

    def __init__(self, config: ml_collections.ConfigDict, checkpoint: str):
        self.config = config
        self.sampler = Sampler(config, restore_model(checkpoint, config))
        self.w2v, self.w2v_params, _ = encoders.audio_encoder(config)
        vae_module, vae_params, _ = encoders.vae(config)
        self.codec = VAECodec(vae_module, vae_params, chunk=config.model.clip_frames)

    def reference(self, portrait_path: str) -> tuple[np.ndarray, np.ndarray]:
        """(reference crop [S, S, 3] as the model sees it, face mask) of a portrait file, as emo-generate makes them."""
        image, c = read_image(portrait_path), self.config
        return frame_reference(image, detect_face(image, portrait_path, c.demo.detector), c.data.size,
                               c.data.face_expand, c.sample.mask_expand)

    def frames(self, reference: np.ndarray, mask: np.ndarray, audio: np.ndarray, seed: int,
               speed: float | None = None) -> np.ndarray:
        """uint8 frames [T, S, S, 3] for 16 kHz audio, T = round(duration * fps); `speed`: the constant head speed
        a stage-3 model is driven at (degrees per frame)."""
        c, s = self.config, self.config.sample
        ref = self.sampler.reference(self.codec.encode(reference[None]))
        features = audio_features(audio, c.data.fps, self.w2v, self.w2v_params, context=c.model.audio.context,
                                  window_seconds=c.audio.window_seconds)
        signals = None if speed is None else {"speed": np.full(len(features), speed, np.float32)}
        latents = self.sampler.sample(ref, features, mask, seed, s.ref_scale, s.audio_scale, signals=signals)
        return self.codec.decode(latents)


def _sheet_row(reference: np.ndarray, frames: np.ndarray) -> np.ndarray:
    picks = np.linspace(0, len(frames) - 1, SHEET_COLUMNS - 1).round().astype(int)
    return np.concatenate([reference[None], frames[picks]])


def generate_and_measure(gen: Generator, names: list[str], portraits: list[str], audio_paths: list[str],
                         out_dir: str, seed: int = 0) -> tuple[list[VideoResult], list[np.ndarray], dict]:
    """Generates every identity on its held-out audio and on silence; writes mp4s. Returns the measures, the contact
    sheet's rows, and the videos with real audio by identity name."""
    config = gen.config
    fps, f = config.data.fps, config.model.clip_frames
    refs = [gen.reference(p) for p in portraits]
    crops = [r for r, _ in refs]
    results, rows, videos = [], [], {}
    os.makedirs(out_dir, exist_ok=True)
    for k, (name, (reference, mask), path) in enumerate(zip(names, refs, audio_paths)):
        audio = load_audio(path)
        # The same noise seed for both: whatever differs between the two videos came from the audio.
        video = gen.frames(reference, mask, audio, seed)
        silent = gen.frames(reference, mask, np.zeros_like(audio), seed)
        write_video(os.path.join(out_dir, f"{name}.mp4"), video, fps, audio=audio)
        write_video(os.path.join(out_dir, f"{name}_silent.mp4"), silent, fps, audio=np.zeros_like(audio))
        loud = loudness_per_frame(audio, fps, len(video))
        boundary, inside = continuity(video, f)
        results.append(VideoResult(
            identity=name, frames=len(video), identity_accuracy=identity_accuracy(video, k, crops),
            lip_sync=pearson(mouth_opening(video), loud), lip_sync_control=pearson(mouth_opening(silent), loud),
            boundary_change=boundary, inside_change=inside))
        rows += [_sheet_row(reference, video), _sheet_row(reference, silent)]
        videos[name] = video
    return results, rows, videos


def write_sheet(rows: list[np.ndarray], path: str) -> None:
    """The contact sheet: one row per generated video, the reference crop first, zoomed for the eye."""
    sheet = np.concatenate(rows)
    sheet = sheet.repeat(SHEET_ZOOM, axis=1).repeat(SHEET_ZOOM, axis=2)
    contact_sheet(sheet, path, cols=SHEET_COLUMNS, max_frames=len(sheet))


# A video whose head roll is readable in fewer of its frames than this is left out of the speed summary (counted
# there): its velocity would come from a few scattered frames.
MIN_READABLE = 0.5


@dataclasses.dataclass(frozen=True)
class SpeedResult:
    """Measured head roll velocity (degrees per frame, from the generated frames) of one video."""

    identity: str
    setting: float | None  # the constant speed a stage-3 model was driven at; None: the stage-2 model (no speed layers)
    velocity_mean: float  # over the frames whose velocity is readable (NaN if none)
    velocity_std: float
    readable: float  # the fraction of frames with a readable velocity (head_roll found the head's turn)


def speed_result(identity: str, setting: float | None, frames: np.ndarray, reference: np.ndarray) -> SpeedResult:
    """The head's roll velocity in generated frames, the roll read against the reference crop (head_roll) and
    differenced as emo-prepare's speed label (roll_velocity); unreadable frames are left out and counted."""
    v = roll_velocity(head_roll(frames, reference))
    ok = v[np.isfinite(v)]
    if not len(ok):
        return SpeedResult(identity, setting, float("nan"), float("nan"), 0.0)
    return SpeedResult(identity, setting, float(ok.mean()), float(ok.std()), len(ok) / len(v))


def measure_speed(gen: Generator, idents: list[Identity], portraits: list[str], audio_paths: list[str],
                  settings: tuple[float, ...], out_dir: str, seed: int) -> tuple[list[SpeedResult], list[np.ndarray]]:
    """The stage-3 model generates each portrait on its held-out audio at every constant speed setting, from the
    same noise; the head's roll velocity is measured in what came out. Returns the results and sheet rows (one per
    setting of the first identity)."""
    results, rows = [], []
    for k, (ident, portrait, path) in enumerate(zip(idents, portraits, audio_paths)):
        reference, mask = gen.reference(portrait)
        audio = load_audio(path)
        for setting in settings:
            video = gen.frames(reference, mask, audio, seed, speed=setting)
            write_video(os.path.join(out_dir, f"{ident.name}_speed{setting:g}.mp4"), video, gen.config.data.fps,
                        audio=audio)
            results.append(speed_result(ident.name, setting, video, reference))
            if k == 0:
                rows.append(_sheet_row(reference, video))
    return results, rows


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""
    rank = lambda x: _average_ranks(np.asarray(x, np.float64))  # noqa: E731
    return pearson(rank(a), rank(b))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def speed_summary(results: list[SpeedResult], settings: tuple[float, ...]) -> dict:
    """Per setting (and for the stage-2 model, "none"): mean over videos of the mean velocity, and the mean over
    videos of the per-frame spread; Spearman's correlation of the settings with the mean velocities. Videos read in
    fewer than MIN_READABLE of their frames are left out and counted ("unreadable_videos"); a setting left with no
    video reads NaN, and so does the correlation."""
    def pooled(setting):
        rs = [r for r in results if r.setting == setting and r.readable >= MIN_READABLE]
        mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
        return {"velocity_mean": mean([r.velocity_mean for r in rs]),
                "velocity_std": mean([r.velocity_std for r in rs]), "videos": len(rs)}

    per = {f"{s:g}": pooled(s) for s in settings}
    none = pooled(None)
    std_with = float(np.mean([per[f"{s:g}"]["velocity_std"] for s in settings]))
    velocities = [per[f"{s:g}"]["velocity_mean"] for s in settings]
    return {"settings": per, "no_speed_layers": none,
            "spearman": spearman(list(settings), velocities) if np.isfinite(velocities).all() else float("nan"),
            "velocity_std_with_speed": std_with, "velocity_std_without": none["velocity_std"],
            "unreadable_videos": [dataclasses.asdict(r) for r in results if r.readable < MIN_READABLE],
            "min_readable": MIN_READABLE}


def shift_mask(mask: np.ndarray, dx: int) -> np.ndarray:
    """The mask moved dx pixels along x (positive: right), zeros coming in."""
    out = np.zeros_like(mask)
    if dx >= 0:
        out[:, dx:] = mask[:, :mask.shape[1] - dx]
    else:
        out[:, :dx] = mask[:, -dx:]
    return out


def widen_mask(mask: np.ndarray, factor: float) -> np.ndarray:
    """The mask's bounding box grown `factor` times about its centre (clipped to the frame)."""
    x0, y0, x1, y1 = mask_box(mask)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, factor * (x1 - x0) / 2, factor * (y1 - y0) / 2
    out = np.zeros_like(mask)
    ys, xs = np.mgrid[0:mask.shape[0], 0:mask.shape[1]] + 0.5
    out[(np.abs(xs - cx) <= hw) & (np.abs(ys - cy) <= hh)] = 1
    return out


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the mask's nonzero pixels, pixel edges included."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


@dataclasses.dataclass(frozen=True)
class LocatorResult:
    """Where the generated face landed for one face mask (pixels of the generated frames)."""

    identity: str
    mask: str  # "portrait" (emo-generate's own), "left", "right", "wide"
    mask_box: tuple[float, float, float, float]
    face_cx: float  # mean over frames of the face's centroid
    face_cy: float
    inside: float  # mean over frames of the share of the face's pixels inside the mask's box (share_inside)
    frame: tuple[float, float]  # the generated frames' width and height


def locator_result(ident: Identity, name: str, mask: np.ndarray, frames: np.ndarray, scale: float) -> LocatorResult:
    """`scale`: generated-frame pixels per mask pixel."""
    patches = face_patches(frames, ident)
    pose = face_pose_of(patches)
    box = tuple(v * scale for v in mask_box(mask))
    inside = np.nan_to_num(share_inside(patches, box))  # a frame without a face has none of it inside
    return LocatorResult(ident.name, name, box, float(np.nanmean(pose.cx)), float(np.nanmean(pose.cy)),
                         float(inside.mean()), (float(frames.shape[2]), float(frames.shape[1])))


def measure_locator(gen: Generator, idents: list[Identity], portraits: list[str], audio_paths: list[str],
                    stage2_videos: dict, shift: int, widen: float, out_dir: str,
                    seed: int) -> tuple[list[LocatorResult], list[np.ndarray]]:
    """Each portrait generated (same audio and noise as its stage-2 video, which used the portrait's own mask) with
    the mask moved `shift` mask pixels left and right, and grown `widen` times. Returns results and sheet rows."""
    results, rows = [], []
    scale = gen.config.data.size / gen.sampler.mask_size
    for ident, portrait, path in zip(idents, portraits, audio_paths):
        reference, mask = gen.reference(portrait)
        audio = load_audio(path)
        results.append(locator_result(ident, "portrait", mask, stage2_videos[ident.name], scale))
        for label, moved in (("left", shift_mask(mask, -shift)), ("right", shift_mask(mask, shift)),
                             ("wide", widen_mask(mask, widen))):
            video = gen.frames(reference, moved, audio, seed)
            write_video(os.path.join(out_dir, f"{ident.name}_mask_{label}.mp4"), video, gen.config.data.fps,
                        audio=audio)
            results.append(locator_result(ident, label, moved, video, scale))
            rows.append(_sheet_row(reference, video))
    return results, rows


def locator_summary(results: list[LocatorResult]) -> dict:
    """Per moved mask: the face's centre shift against the portrait-mask video of the same identity, its error
    against the move of the mask's box centre (in generated-frame pixels); the share of the face's pixels inside
    each kind of mask's box (portrait, moved, widened), and which widened boxes are the whole frame (where
    staying inside says nothing)."""
    by = {(r.identity, r.mask): r for r in results}
    centre = lambda box: (box[0] + box[2]) / 2  # noqa: E731
    errors, moves, wanted = [], {}, []
    for (ident, label), r in by.items():
        if label in ("left", "right"):
            own = by[(ident, "portrait")]
            moved, want = r.face_cx - own.face_cx, centre(r.mask_box) - centre(own.mask_box)
            errors.append(abs(moved - want))
            wanted.append(abs(want))
            moves[f"{ident}_{label}"] = moved
    return {"mask_shift": float(np.mean(wanted)), "face_shift": moves, "shift_error_mean": float(np.mean(errors)),
            "shift_error_max": float(np.max(errors)),
            "inside_wide": float(np.mean([r.inside for r in results if r.mask == "wide"])),
            "inside_moved": float(np.mean([r.inside for r in results if r.mask in ("left", "right")])),
            "inside_portrait": float(np.mean([r.inside for r in results if r.mask == "portrait"])),
            "wide_is_whole_frame": [r.identity for r in results
                                    if r.mask == "wide" and tuple(r.mask_box) == (0.0, 0.0, *r.frame)]}