"""EMO at paper scale: 512x512 video, SD1.5-shaped UNets, wav2vec2-base audio, 30 fps.

Variants: `stage1` (images), `stage2` (video + audio, the default), `stage3` (speed layers), `sd` (the plain SD1.5
UNet, for parity and import checks). Values from the EMO paper (Tian et al. 2024, arXiv 2402.17485) carry no
comment; every value the paper leaves open says where its default comes from.

A TPU topology after the variant (`configs/emo_512.py:stage2,v5p-128`) applies the best setting emo-compile found
to fit that slice (TOPOLOGY_PRESETS): global batch, mesh, attention and remat. Without one, the settings below
are the paper's batch on whatever devices there are.
"""
import ml_collections

VARIANTS = ("stage1", "stage2", "stage3", "sd")

# (variant, topology) -> (global batch, mesh data x fsdp x tensor, attention_impl, remat_resnets, remat_policy): per
# slice, the row of benchmarks/results/compile_plan.json with the most examples per second among those that fit
# (the rows and how they were chosen: docs/scale.md). Each is a throughput setting, not a tuned recipe: the batch
# differs from the paper's 48 (stage 1) or 4 (stages 2-3), and train.lr is not rescaled for it.
TOPOLOGY_PRESETS = {
    ("stage1", "v5e-64"): (64, (8, 8, 1), "chunked", False, "nothing_saveable"),
    ("stage1", "v5e-256"): (2048, (32, 8, 1), "splash", False, "nothing_saveable"),  # 8 frames per chip
    ("stage1", "v5p-64"): (48, (8, 2, 2), "xla", False, "nothing_saveable"),
    ("stage1", "v5p-128"): (1024, (16, 4, 1), "splash", False, "dots_saveable"),  # 16 frames per chip
    ("stage1", "v6e-64"): (64, (8, 8, 1), "xla", False, "nothing_saveable"),
    ("stage2", "v5e-64"): (16, (2, 8, 4), "chunked", True, "nothing_saveable"),
    ("stage2", "v5e-256"): (64, (8, 8, 4), "chunked", True, "nothing_saveable"),
    ("stage2", "v5p-64"): (32, (8, 4, 1), "xla", False, "nothing_saveable"),
    ("stage2", "v5p-128"): (256, (16, 4, 1), "splash", False, "dots_saveable"),  # four clips per chip
    ("stage2", "v6e-64"): (32, (4, 8, 2), "chunked", True, "nothing_saveable"),
    ("stage3", "v5p-128"): (256, (16, 4, 1), "splash", False, "dots_saveable"),  # four clips per chip
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, *rest = (arg or "stage2").split(",")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} of emo_512; choose one of {VARIANTS}")
    if len(rest) > 1 or (rest and (variant, rest[0]) not in TOPOLOGY_PRESETS):
        known = sorted(t for v, t in TOPOLOGY_PRESETS if v == variant)
        raise ValueError(f"no compiled preset for {arg!r}; topologies with one for {variant}: {known or 'none'} "
                         "(or leave the topology out and set the mesh and batch with --config.KEY VALUE)")
    c = _config(variant)
    if rest:
        batch, (data, fsdp, tensor), attention, remat_resnets, remat_policy = TOPOLOGY_PRESETS[variant, rest[0]]
        c.train.batch_size = batch
        c.mesh.shape.update({"data": data, "fsdp": fsdp, "tensor": tensor})
        c.model.unet.attention_impl = attention
        c.model.unet.remat_resnets = remat_resnets
        c.model.unet.remat_policy = remat_policy
    return c


def _config(variant: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0

    c.model = m = ml_collections.ConfigDict()
    m.mode = "sd" if variant == "sd" else "emo"
    m.latent_size = 64  # 512 px / the VAE's factor 8
    m.clip_frames = 12  # f
    m.motion_frames = 4  # n
    m.first_clip_motion = "zeros"  # DESIGN.md: zeros before the first clip; "reference" repeats the reference
    m.unet = u = ml_collections.ConfigDict()
    u.in_channels = 4
    u.out_channels = 4
    u.block_out_channels = (320, 640, 1280, 1280)  # SD1.5
    u.attention_levels = (True, True, True, False)  # SD1.5: CrossAttnDownBlock2D x3 + DownBlock2D
    u.layers_per_block = 2  # SD1.5
    u.heads = 8  # SD1.5
    u.norm_groups = 32  # SD1.5
    u.cross_attention_dim = 768  # SD1.5 text width; also the audio/speed token width (wav2vec2-base is 768)
    u.text_cross_attention = variant == "sd"  # EMO has no text prompt
    u.reference_mode = None if variant == "sd" else "concat"  # DESIGN.md: AnimateAnyone/Hallo-style concat
    u.audio_attention = variant in ("stage2", "stage3")
    u.audio_dim = 768
    u.temporal = variant in ("stage2", "stage3")
    u.temporal_heads = 8  # AnimateDiff v2
    u.temporal_max_len = 32  # AnimateDiff v2; n + f = 16 frames fit
    u.temporal_layers = 1  # AnimateDiff v2
    u.speed_attention = variant == "stage3"
    u.speed_dim = 768
    # The speed attention feeds the temporal attention (models/temporal.py says why; False: the earlier order).
    u.speed_before_temporal = True
    # "cudnn" on GPUs; "chunked" bounds score memory anywhere; "pallas_tpu" cannot run SD1.5 widths (head_dim
    # 160 at the deep levels; its flash kernel needs <= 128 or a multiple of 128). See docs/scale.md.
    u.attention_impl = "xla"
    u.attention_chunk = 1024
    # Attentions with fewer keys than this run as plain XLA whatever attention_impl says: on an H200 the fused
    # cuDNN kernel was 6.6x faster than XLA at the 64x64 level (8,192 keys) but 2.6x slower on the temporal
    # attention's 16 keys (benchmarks/attention.py, results/attention_h200.json).
    u.attention_min_keys = 128
    u.remat = variant != "sd"
    # Off by default: on a chip that holds a clip's ResNet activations it only costs FLOPs. The v5e stage-2 plan
    # needs it (docs/scale.md).
    u.remat_resnets = False
    # What each rematerialised block keeps for the backward: "nothing_saveable" (recompute it all, least memory),
    # "dots_saveable" (keep matmul and conv outputs: less recompute, more memory) or
    # "dots_with_no_batch_dims_saveable"; emo-compile shows which fits a topology.
    u.remat_policy = "nothing_saveable"
    u.dtype = "bfloat16" if variant != "sd" else "float32"
    u.param_dtype = "float32"
    m.audio = a = ml_collections.ConfigDict()
    a.context = 2  # m: frames of context each side
    a.layers = 12  # wav2vec2-base transformer layers (the embedding output is not used, as in Hallo)
    a.feature_dim = 768
    a.tokens = 32  # Hallo's AudioProjModel context_tokens
    a.hidden = 512  # Hallo's AudioProjModel intermediate_dim
    m.face_locator = fl = ml_collections.ConfigDict()
    fl.enabled = variant != "sd"
    fl.channels = (16, 32, 64, 128)  # AnimateAnyone's pose guider / Hallo's face locator
    m.speed = s = ml_collections.ConfigDict()
    # Head rotation speed in degrees per frame (emo-prepare's head_pose label; the paper leaves d, c_i, r_i open).
    # Chosen from benchmarks/head_speed.py on three real talking-head clips (18 s, 536 frames at 30 fps, smoothed as
    # emo-prepare smooths): p5 0.11, p25 0.23, p50 0.34, p75 0.69, p95 1.94, max 3.1. The centres sit near those
    # quantiles, finest where most frames are, the last ones covering fast turns (singing moves more; re-measure on
    # your data with that script and set these). EMO's Table 2 drives the model at 0.1 to 1.9: the same range.
    s.centres = (0.0, 0.15, 0.25, 0.35, 0.5, 0.75, 1.1, 1.6, 2.4)
    s.radii = (0.15, 0.1, 0.1, 0.1, 0.15, 0.25, 0.35, 0.5, 0.8)
    s.context = 2  # same m as the audio
    s.tokens = 4  # our choice: a few tokens give the speed attention something to select from
    # The unit of the centres and radii, and of emo-generate's --speed. emo-train's stage 3 stops when the prepared
    # data's speed labels are in another unit: emo-prepare's image-motion proxies (--speed-estimator flow / box)
    # are in face widths per second. To train on a proxy anyway, set this to its unit ("face_widths_per_second")
    # and choose centres and radii on its scale.
    s.unit = "degrees_per_frame"
    s.hidden = 512

    c.vae = None if variant == "sd" else _sd_vae()

    c.audio = au = ml_collections.ConfigDict()
    au.sample_rate = 16000
    au.window_seconds = 30.0  # encoder window for long audio (memory bound); overlap covers the pos-conv field
    au.wav2vec_path = ""  # local Hugging Face folder of facebook/wav2vec2-base-960h (no downloads)
    # The encoder's shape, used only by random encoders (smoke tests: emo-generate --random-init, emo-train
    # --random-init-encoders); a real run reads it from wav2vec_path.
    au.encoder = ml_collections.ConfigDict(dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16))

    c.data = d = ml_collections.ConfigDict()
    d.fps = 30
    d.size = 512
    # Crop side / face side of a still face: emo-prepare's crops of training videos and emo-generate's crop of the
    # portrait follow this one rule (data_pipeline/crop.py: frame_face). Our choice: the face box fills half the side.
    d.face_expand = 2.0
    d.path = ""  # folder of ArrayRecord shards written by emo-prepare
    d.reference_margin = 15  # stage 1: frames between target and reference (our choice: half a second)
    d.workers = 2

    c.train = t = ml_collections.ConfigDict()
    t.stage = {"stage1": 1, "stage2": 2, "stage3": 3, "sd": 0}[variant]
    # What trains: () = the stage's parameter groups (emo_jax.params.GROUPS); else group names and/or regexes over
    # parameter paths, e.g. ("temporal", "backbone/.*attn1").
    t.trainable = ()
    t.lr = 1e-5
    t.batch_size = 48 if variant == "stage1" else 4
    t.steps = 100_000  # paper gives no step count; Hallo trains stage 1 for 30k, stage 2 for 40k+
    t.warmup_steps = 500  # our choice
    t.grad_clip = 1.0  # Hallo
    t.grad_accum = 1
    t.weight_decay = 1e-2  # AdamW default in Hallo
    t.ema_decay = 0.9999
    t.ref_dropout = 0.05
    t.audio_dropout = 0.05
    t.motion_dropout = 0.05
    t.prediction_type = "epsilon"  # or "v_prediction" (Hallo) with zero_terminal_snr
    t.zero_terminal_snr = False
    t.min_snr_gamma = 0.0  # 0 disables min-SNR weighting
    t.log_every = 50
    t.checkpoint_every = 1000
    t.keep_checkpoints = 3
    t.keep_every = 10_000
    t.max_bad_steps = 10
    c.init = i = ml_collections.ConfigDict()
    i.sd_path = ""  # local SD1.5 folder (diffusers layout) for ReferenceNet and backbone
    i.animatediff_path = ""  # local AnimateDiff v2 motion module (mm_sd_v15_v2) for the temporal layers
    i.previous_stage = ""  # checkpoint folder of the previous stage

    c.sample = sp = ml_collections.ConfigDict()
    sp.steps = 40
    # DDIM timestep spacing; "auto": "trailing" with train.zero_terminal_snr (the first step must start at the
    # last timestep), else "leading" (diffusers' SD1.5 default); or name one.
    sp.spacing = "auto"
    sp.guidance = "separate"  # or "joint"
    sp.ref_scale = 3.5  # Hallo's default CFG scale
    sp.audio_scale = 3.5
    # Inference only: the face locator's mask is the portrait's face box grown this many times about its centre,
    # room for the head motion of the whole video that one still box does not cover (training masks are the
    # union of each clip's face boxes). Our choice; Hallo's inference config has face_expand_ratio 1.2.
    sp.mask_expand = 1.5
    sp.clips_per_chunk = 4  # clips streamed to the host per compiled call

    # emo-train's periodic evaluation (emo_jax/train/evaluate.py): every `every` steps, `clips` held-out segments of
    # `data_path` (an emo-prepare folder) generated with the EMA weights and measured (FVD, FID, identity,
    # continuity) into TensorBoard and metrics.jsonl. Off by default.
    c.eval = ev = ml_collections.ConfigDict()
    ev.every = 0
    ev.data_path = ""
    ev.clips = 8
    ev.frames = 48  # 1.6 s at 30 fps: three 16-frame FVD windows, four 12-frame clips (three boundaries)
    ev.weights = ""  # folder of emo-eval's weights files; "" = emo-eval's default (~/.cache/emo-jax/eval)
    ev.fid_every = 1
    ev.fvd_stride = 16
    ev.seed = 0
    ev.mouth_colour = ()  # RGB of the mouths for the demo's lip-sync measure (synthetic faces only); (): off
    ev.save_videos = True  # <workdir>/eval/<step>/<segment>.mp4: generated beside real

    c.mesh = mesh = ml_collections.ConfigDict()
    mesh.shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    mesh.rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("conv_in", "fsdp"),
        ("conv_out", "tensor"),
        ("norm", None),
        ("length", None),
        ("act_embed", None),
    )
    return c


def _sd_vae() -> ml_collections.ConfigDict:
    v = ml_collections.ConfigDict()
    v.block_out_channels = (128, 256, 512, 512)  # SD1.5's AutoencoderKL
    v.layers_per_block = 2
    v.latent_channels = 4
    v.norm_groups = 32
    v.scaling_factor = 0.18215
    v.path = ""  # local SD folder; its vae/ subfolder is read
    return v
