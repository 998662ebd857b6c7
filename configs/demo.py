"""The emo-demo run: configs/tiny.py sized so that two CPU cores learn identity and lip sync in minutes.

Variants: `stage1` (images) and `stage2` (video + audio, the default); append `,quick` (e.g. `stage2,quick`) for
the smoke-test sizes of `emo-demo --quick`. The `demo` section is read by emo_jax/demo/run.py only: how much
known-answer data to draw and how long to train the demo's own VAE.
"""
import ml_collections

from configs import tiny

VARIANTS = ("stage1", "stage2")


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

    t = c.train
    # The paper's 1e-5 fine-tunes a pretrained SD1.5; these tiny UNets start from scratch and must converge in
    # a few hundred steps, where 1e-5 would barely move them.
    t.lr = 1e-3
    t.warmup_steps = 20
    t.weight_decay = 0.0  # nothing to regularise towards in a from-scratch model trained this briefly
    t.ema_decay = 0.95  # an EMA of ~20 steps: smooths the last updates without lagging a short run
    t.steps = {"stage1": 300, "stage2": 250}[variant]
    # Min-SNR weighting (Hang et al. 2023) converges several times faster than plain epsilon MSE, which a run
    # of a few hundred steps needs.
    t.min_snr_gamma = 5.0
    t.checkpoint_every = t.steps  # one save at the end: checkpoints cost seconds that the demo has not got
    t.log_every = 50
    t.keep_checkpoints = 1
    # Lower condition dropout than the paper's 5% would leave guidance untrained; higher costs learning time.
    t.ref_dropout = t.audio_dropout = t.motion_dropout = 0.1

    s = c.sample
    s.steps = 10  # DDIM steps: the small latent space needs few, and every step runs three guidance passes
    s.ref_scale = 2.0
    s.audio_scale = 3.0
    s.clips_per_chunk = 4
    s.face_expand = 1.1  # training masks are the union of a clip's unexpanded face boxes

    c.demo = d = ml_collections.ConfigDict()
    d.identities = 5
    d.videos_per_identity = 3
    d.video_seconds = 8.0  # one segment per video (emo-prepare's min 3 s, max 12 s)
    d.heldout_seconds = 4.0
    d.render_side = 128  # the raw videos; Haar finds the drawn faces reliably from about 100 px up
    d.vae_steps = 250
    d.vae_lr = 2e-3
    d.vae_batch = 16
    if quick:
        d.identities = 2
        d.videos_per_identity = 1
        d.video_seconds = 4.0
        d.heldout_seconds = 2.0
        d.vae_steps = 30
        t.steps = 6
        t.checkpoint_every = t.steps
        t.log_every = 2
        s.steps = 2
    return c
