"""The emo-demo run: configs/tiny.py sized so that two CPU cores learn identity and lip sync in minutes.

Variants: `stage1` (images), `stage2` (video + audio, the default) and `stage3` (speed layers, with the temporal
layers; the audio layers stay fixed); append `,quick` (e.g. `stage2,quick`) for the smoke-test sizes of
`emo-demo --quick`. The `demo` section is read by emo_jax/demo/run.py only: how much
known-answer data to draw and how long to train the demo's own VAE.
"""
import ml_collections

from configs import tiny
from emo_jax.demo.synthetic import MOUTH

VARIANTS = ("stage1", "stage2", "stage3")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, *flags = (arg or "stage2").split(",")
    if variant not in VARIANTS or set(flags) - {"quick"}:
        raise ValueError(f"unknown variant {arg!r} of demo; choose one of {VARIANTS}, optionally with ',quick'")
    quick = "quick" in flags
    c = tiny.get_config(variant)
    c.variant = variant
    # 15 fps: the drawn speech has ~4 syllables per second of 0.12-0.26 s, so each syllable spans 2-4 frames
    # (enough to see the mouth open and close) while a second of video costs half the frames of 30 fps.
    c.data.fps = 15
    c.data.workers = 0  # two cores: Grain's worker processes would compete with the training step itself
    c.data.reference_margin = 4
    # Crop side / face side (emo_512's 2.0 suits real footage). At 2.0 the swaying drawn head filled a quarter of
    # the 32 px crop and an open mouth was about 5 x 6 pixels; 1.4 makes the face, and the mouth the audio must
    # drive, larger in every frame. emo-generate frames the portraits by the same rule.
    c.data.face_expand = 1.4

    t = c.train
    # The paper's 1e-5 fine-tunes a pretrained SD1.5; these tiny UNets start from scratch and must converge in
    # a few hundred steps, where 1e-5 would barely move them.
    t.lr = 1e-3
    t.warmup_steps = 20
    t.weight_decay = 0.0  # nothing to regularise towards in a from-scratch model trained this briefly
    t.ema_decay = 0.95  # an EMA of ~20 steps: smooths the last updates without lagging a short run
    # Stage 2 at 1,000 steps instead of 500 reads the motion frames' motion (benchmarks/condition_use.py: motion
    # frames that all repeat the last one raise the error -2.0% at 500 steps, +3.4% at 1,000; reversed +5.8% ->
    # +28.6%), the motion the speed layers modulate, and flickers less (frame_change.py: 2.1x -> 1.5x the data's
    # change a frame). The cost: about 8 more minutes on a 2-core host (1.33 steps/s in session 20).
    # Stage 3 at 750 steps instead of 250: from the same stage 2, the roll velocity's Spearman over the speed
    # settings went 0.2 -> 0.9 (1,500 steps: 0.9; benchmarks/results/speed_stage3_steps.json, by
    # benchmarks/speed_control.py). The cost: about 7 more minutes on a 2-core host.
    t.steps = {"stage1": 300, "stage2": 1000, "stage3": 750}[variant]
    # v-prediction on a zero-terminal-SNR schedule (Lin et al. 2024; Hallo trains EMO this way too). With epsilon
    # prediction the first sampling steps get x0 from eps / sqrt(abar) ~ 15 x eps: after 300 stage-1 steps the
    # x0 error at t=950 was 3.3 (latents have unit variance) and barely lower with the right reference than a
    # wrong one, so samples ignored the identity. v-prediction makes the high-noise target x0 itself, the
    # reference is learnt in the same 300 steps (x0 error 0.12 right vs 0.90 wrong reference, identity
    # accuracy 0.4 -> 1.0). Min-SNR weighting stays off: for v it scales the high-noise steps down towards 0.
    t.prediction_type = "v_prediction"
    t.zero_terminal_snr = True
    t.min_snr_gamma = 0.0
    t.checkpoint_every = t.steps  # one save at the end: checkpoints cost seconds that the demo has not got
    t.log_every = 50
    t.keep_checkpoints = 1
    # Lower condition dropout than the paper's 5% would leave guidance untrained; higher costs learning time.
    t.ref_dropout = t.audio_dropout = t.motion_dropout = 0.1

    s = c.sample
    s.spacing = "trailing"  # zero terminal SNR: the first step must start at t = 999
    s.steps = 10  # DDIM steps: the small latent space needs few, and every step runs three guidance passes
    s.ref_scale = 2.0
    s.audio_scale = 3.0
    s.clips_per_chunk = 4
    # Training masks are the union of one clip's face boxes; the drawn heads sway slowly, a pixel or two of the
    # 32 px frame within a clip, so the portrait's box needs little room beyond itself.
    s.mask_expand = 1.1

    # Speed buckets over the drawn heads' labels (emo_jax/demo/synthetic.py: 0-6 deg/frame drawn, read as 0-4.8):
    # emo_512's buckets end at 2.4 + 0.8, above which every label would encode alike.
    c.model.speed.centres = (0.0, 0.6, 1.2, 1.8, 2.4, 3.0, 3.6, 4.2, 4.8)
    c.model.speed.radii = (0.6,) * 9

    c.eval.mouth_colour = MOUTH  # the drawn mouths' colour, which the lip-sync measure reads

    c.demo = d = ml_collections.ConfigDict()
    d.identities = 5
    d.videos_per_identity = 3
    d.video_seconds = 8.0  # one segment per video (emo-prepare's min 3 s, max 12 s)
    d.heldout_seconds = 4.0
    d.render_side = 128  # the raw videos and portraits; BlazeFace and Face Mesh read the drawn heads at this size
    d.detector = "blazeface"  # emo-prepare's and emo-generate's face detector for the demo's drawings
    # Issue #24's controls, measured on the first `control_identities` portraits with their held-out audio: the
    # stage-3 model at constant speeds spanning the trained labels (EMO's Table 2 drives 0.1, 0.7, 1.3, 1.9), and
    # the stage-2 model with the face mask moved `locator_shift` mask pixels left and right and grown
    # `locator_widen` times (the drawn heads sway about +-2 px of the 32 px crop in training). The portrait's
    # mask is 26 px of the 32 px crop (face_expand 1.4, mask_expand 1.1): 1.15 grows it to 30 px, the widest that
    # leaves the frame's edge outside it (at 1.3 it was the whole frame, and staying inside it tested nothing).
    d.control_identities = 2
    d.speed_settings = (0.5, 1.5, 2.5, 3.5, 4.5)
    d.locator_shift = 3
    d.locator_widen = 1.15
    d.vae_steps = 250
    d.vae_lr = 2e-3
    d.vae_batch = 16
    # The tiny wav2vec2's stand-in for pretraining (emo_jax/demo/encoders.py: pretrain_wav2vec2).
    d.audio_pretrain_steps = 600  # held-out loudness read-out: correlation 0.6 random, 0.86 at 200, 0.95 at 600
    d.audio_pretrain_lr = 3e-3
    d.audio_pretrain_batch = 8
    d.audio_pretrain_seconds = 1.0
    if quick:
        d.identities = 2
        d.videos_per_identity = 1
        d.video_seconds = 4.0
        d.heldout_seconds = 2.0
        d.vae_steps = 30
        d.audio_pretrain_steps = 10
        d.control_identities = 1
        d.speed_settings = (0.5, 3.5)
        t.steps = 6
        t.checkpoint_every = t.steps
        t.log_every = 2
        s.steps = 2
        # One UNet level instead of two: every train step and sampler program has about half the ops, and
        # compiling them is most of a smoke run's time (measured from a cold cache, idle host: 202 s -> 136 s).
        c.model.unet.block_out_channels = (32,)
        c.model.unet.attention_levels = (True,)
    return c
