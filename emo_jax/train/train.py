"""One EMO training stage on any mesh, from one process or many; emo-train (emo_jax/cli/train.py) runs it.

Sections of `train` read top to bottom: mesh, data, state (fresh or restored), encoders, compiled step, loop,
saves. A run restarted with the same --workdir resumes from its latest checkpoint, data position included.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Sequence

import flax.linen as nn
import grain
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from data_pipeline.loader import LoaderConfig, make_dataset, read_manifest, shard_paths, shard_records
from data_pipeline.schema import READABLE_VERSIONS
from data_pipeline.speed import ESTIMATORS
from emo_jax import encoders
from emo_jax.batch import batch_spec, check_batch
from emo_jax.errors import ConfigError, RunError
from emo_jax.params import group_of, module_of
from emo_jax.sharding import batch_sharding, make_mesh, replicated
from emo_jax.train.checkpoint import Checkpointer, restore_params
from emo_jax.train.evaluate import PeriodicEvaluation, eval_config
from emo_jax.train.metrics import MetricsWriter
from emo_jax.train.state import StateFactory, TrainState
from emo_jax.train.step import Encoders, make_train_step

log = logging.getLogger("emo_jax.train")


class NonFiniteLossError(RunError):
    """train.max_bad_steps steps in a row had a non-finite loss or gradient."""


# ---------------------------------------------------------------------------------------------- processes


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Joins the processes of a multi-host run; a single-host run needs nothing.

    Explicit flags win; otherwise a TPU pod slice or a SLURM job with several tasks is detected by
    jax.distributed.initialize() itself (it reads the TPU metadata or the SLURM environment).
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ConfigError("--coordinator, --num-processes and --process-id go together; pass all three")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()


class StopRequest:
    """Turns SIGTERM (a preemption notice) into a flag the loop checks between steps, agreed on by all processes."""

    def __init__(self):
        self._requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self._requested = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self._requested
        from jax.experimental import multihost_utils

        # Processes receive the signal at different moments; all of them must stop (and save) at one step.
        return bool(np.any(multihost_utils.process_allgather(np.int32(self._requested))))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


# ---------------------------------------------------------------------------------------------- data


def training_dataset(config: ml_collections.ConfigDict) -> grain.IterDataset:
    """This process's share of the prepared shards at config.data.path, batched to its part of the batch."""
    if not config.data.path:
        raise ConfigError("config.data.path is empty: pass --config.data.path FOLDER (an emo-prepare --output)")
    check_prepared_settings(config, read_manifest(config.data.path))
    loader = LoaderConfig.from_config(config, local_batch_size(config))
    return make_dataset(shard_records(shard_paths(config.data.path)), loader, jax.process_index(), jax.process_count())


def _same_model_folder(a: str, b: str) -> bool:
    """Whether two local model folders hold the same model, judged by their config.json (paths differ between
    the machine that prepared the data and the one that trains); True when either cannot be read here."""
    texts = []
    for folder in (a, b):
        path = os.path.join(folder, "config.json")
        if not os.path.isfile(path):
            return True
        with open(path, encoding="utf-8") as f:
            texts.append(json.load(f))
    return texts[0] == texts[1]


def check_prepared_settings(config: ml_collections.ConfigDict, manifest: dict) -> None:
    """Stops the run, before anything compiles, when the data was prepared with settings the config does not
    train at, naming each field and both values: frames at another rate misalign audio and motion, frames of
    another size do not fit the model, and features from another encoder are not what emo-generate computes."""
    prepared = manifest.get("config", {})
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ConfigError(f"{config.data.path!r} holds schema version {version} records; this emo-jax reads "
                          f"{READABLE_VERSIONS}: prepare the data again with this version's emo-prepare")
    pairs = [("fps", "data.fps", config.data.fps), ("size", "data.size", config.data.size),
             ("audio_sample_rate", "audio.sample_rate", config.audio.sample_rate)]
    differ = [f"prepared {name} {prepared[name]!r} but config {key} {value!r}" for name, key, value in pairs
              if name in prepared and float(prepared[name]) != float(value)]
    for name, key, path in (("wav2vec", "audio.wav2vec_path", config.audio.wav2vec_path),
                            ("vae", "vae.path", (config.get("vae") or {}).get("path", ""))):
        if prepared.get(name) and path:
            folder = os.path.join(path, "vae") if name == "vae" and os.path.isdir(os.path.join(path, "vae")) else path
            if not _same_model_folder(prepared[name], folder):
                differ.append(f"{name} features were made by {prepared[name]!r}, another model than config {key} "
                              f"{path!r} (their config.json differ)")
    if config.train.stage == 3 and prepared.get("speed_estimator") in ESTIMATORS:
        unit = ESTIMATORS[prepared["speed_estimator"]].unit
        if unit != config.model.speed.unit:
            differ.append(f"speed labels from the {prepared['speed_estimator']!r} estimator are in {unit} but the "
                          f"model's speed buckets (model.speed.unit) are in {config.model.speed.unit}; stage 3 would "
                          f"learn buckets on the wrong scale (to train on this proxy, set model.speed.unit {unit} "
                          "and choose model.speed.centres and radii on its scale)")
    if differ:
        raise ConfigError(f"{config.data.path!r} was prepared for other settings than this config: "
                          f"{'; '.join(differ)}. Prepare the data with this config (emo-prepare --config ...) or "
                          "train with the settings it was prepared at")
    if "face_expand" in prepared and float(prepared["face_expand"]) != float(config.data.face_expand):
        log.warning("%s was framed with face_expand %s but config data.face_expand is %s: emo-generate will frame "
                    "portraits unlike the training faces", config.data.path, prepared["face_expand"],
                    config.data.face_expand)


def local_batch_size(config: ml_collections.ConfigDict) -> int:
    batch, processes = config.train.batch_size, jax.process_count()
    if batch % processes:
        raise ConfigError(f"train.batch_size {batch} does not divide over {processes} processes; make it a multiple")
    return batch // processes


def global_batch(batch: dict, mesh, keys: Sequence[str]) -> dict:
    """Process-local numpy batches -> global arrays sharded over the mesh's batch axes."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(batch[k])), np.asarray(batch[k]))
            for k in keys}


def used_keys(config: ml_collections.ConfigDict, batch: dict) -> list[str]:
    """The batch entries the step reads (precomputed latents/features where present, else frames/audio), after
    checking them against the config: data prepared for other settings stops the run before anything compiles."""
    try:
        fields = check_batch(batch_spec(config), batch)
    except ValueError as e:
        raise ConfigError(f"{config.data.path or 'the dataset'}: {e}") from e
    return [f.name for f in fields.values()]


# ---------------------------------------------------------------------------------------------- state


def load_encoders(config: ml_collections.ConfigDict, keys: Sequence[str], random_init: bool) -> tuple[Encoders, dict]:
    """The frozen encoders the batches need (none when latents and audio features come precomputed)."""
    vae_module = audio_module = vae_params = audio_params = None
    scaling = config.vae.scaling_factor if config.get("vae") is not None else 0.18215
    if any(k in keys for k in ("target", "reference", "motion")):
        vae_module, vae_params, _ = encoders.vae(config, random_init=random_init)
    if "audio" in keys:
        audio_module, audio_params, _ = encoders.audio_encoder(config, random_init=random_init)
    return Encoders(vae_module, audio_module, scaling), {"vae": vae_params, "audio": audio_params}


def initial_params(config: ml_collections.ConfigDict, params: dict) -> dict:
    """Fresh params filled from SD1.5 (init.sd_path), AnimateDiff (init.animatediff_path) and/or a previous stage's
    checkpoint (init.previous_stage), in that order.

    SD1.5's UNet goes into both the ReferenceNet and the backbone; AnimateDiff v2's motion modules into the
    temporal layers, as the paper initialises them; a previous stage then overrides every parameter it has with
    the same path and shape. Layers none of them has keep their fresh values, and the log says which those are.
    """
    i = config.init
    sources = dict.fromkeys(traverse_util.flatten_dict(params), "fresh initialisation")
    if i.sd_path:
        from emo_jax.interop.sd_unet import init_from_sd

        params, _ = init_from_sd(params, i.sd_path)  # every SD layer is filled, or it raises
        sources.update({p: "SD1.5" for p in sources if group_of(p).from_sd})
    if i.animatediff_path:
        from emo_jax.interop.animatediff import import_animatediff

        try:
            params, _ = import_animatediff(i.animatediff_path, params)
        except ValueError as e:  # no motion modules in this config
            raise ConfigError(f"init.animatediff_path: {e}") from e
        sources.update({p: "AnimateDiff" for p in sources if module_of(p) == "temporal"})
    if i.previous_stage:
        # The previous stage's trained weights, not its EMA: Hallo and AnimateAnyone continue from these.
        _, previous = restore_params(i.previous_stage, use_ema=False)
        flat, old = traverse_util.flatten_dict(params), traverse_util.flatten_dict(previous)
        taken = {k: v for k, v in old.items() if k in flat and np.shape(flat[k]) == np.shape(v)}
        flat.update(taken)
        sources.update(dict.fromkeys(taken, "the previous stage"))
        params = traverse_util.unflatten_dict(flat)
    log_sources(config, sources)
    return params


def log_sources(config: ml_collections.ConfigDict, sources: dict[tuple[str, ...], str]) -> None:
    """Says where each parameter group's values come from; temporal layers from zero get a hint."""
    by_group: dict[str, dict[str, int]] = {}
    for path, source in sources.items():
        counts = by_group.setdefault(module_of(path), {})
        counts[source] = counts.get(source, 0) + 1
    for group, counts in sorted(by_group.items()):
        log.info("%s: %s", group, ", ".join(f"{n} tensors from {s}" for s, n in sorted(counts.items())))
    if by_group.get("temporal", {}).get("fresh initialisation"):
        log.info("the temporal layers start from zero-initialised outputs (the video model starts as the image "
                 "model); set init.animatediff_path to a local AnimateDiff v2 motion module (mm_sd_v15_v2) to start "
                 "them from AnimateDiff, as the paper does")


# ---------------------------------------------------------------------------------------------- training


def train(config: ml_collections.ConfigDict, workdir: str, dataset: grain.IterDataset | None = None,
          random_init_encoders: bool = False, resume_step: int | None = None) -> TrainState:
    """Runs (or resumes) training to config.train.steps; `dataset` replaces the prepared shards (per process).

    A workdir with checkpoints resumes from checkpoint `resume_step`, by default the newest intact one."""
    t = config.train
    evaluating = bool(eval_config(config).every)  # a bad eval section stops the run before anything loads
    # Mesh.
    mesh = make_mesh(config.mesh.shape)
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if t.batch_size % batch_ways:
        raise ConfigError(f"train.batch_size {t.batch_size} must be a multiple of mesh data x fsdp = {batch_ways}")
    # Data: every process reads only its own shard of the segments.
    iterator = iter(dataset if dataset is not None else training_dataset(config))
    # State: restored from the workdir, or created on the mesh and filled from SD1.5 / the previous stage.
    factory = StateFactory(config, mesh)
    checkpoints = Checkpointer(workdir, config)
    if checkpoints.latest_step() is not None or resume_step is not None:
        state = checkpoints.restore(factory.abstract_with_shardings(), iterator, step=resume_step)
    else:
        state = factory.create(config.seed)
        i = config.init
        if i.sd_path or i.animatediff_path or i.previous_stage:
            state = factory.with_params(state, initial_params(config, factory.host_params(state)))
        else:
            log_sources(config, dict.fromkeys(traverse_util.flatten_dict(factory.abstract.params),
                                              "fresh initialisation"))
    step = int(jax.device_get(state.step))
    # Encoders and the compiled step, chosen by what the batches carry.
    first = next(iterator)
    keys = used_keys(config, first)
    encs, frozen = load_encoders(config, keys, random_init_encoders)
    frozen = jax.device_put(jax.device_get(frozen), replicated(mesh))
    train_step = jax.jit(make_train_step(config, factory.model, factory.tx, factory.mask, encs),
                         donate_argnums=0, out_shardings=(factory.shardings, replicated(mesh)))
    # Periodic evaluation: held-out clips, encoders and metric networks loaded once, before the first step.
    evaluation = None
    if evaluating:
        evaluation = PeriodicEvaluation(config, workdir, precomputed_audio="audio_features" in keys,
                                        random_init_encoders=random_init_encoders)
    # Loop. Metrics of step s are read after step s + 1 is dispatched, so the host never idles the devices.
    writer = MetricsWriter(workdir, t.steps, t.batch_size, t.log_every, enabled=jax.process_index() == 0,
                           resume_step=step)
    stop = StopRequest()
    pending, batch, timing = None, first, False
    try:
        while step < t.steps:
            # Here the iterator has yielded exactly `step` batches (bar the one in hand), so a checkpoint
            # taken after the step below records the data position that belongs to its state.
            batch = batch if batch is not None else next(iterator)
            with jax.set_mesh(mesh), nn.logical_axis_rules(config.mesh.rules):
                state, metrics = train_step(state, frozen, global_batch(batch, mesh, keys))
            batch, step = None, step + 1
            if pending is not None:
                _check(pending, writer, t.max_bad_steps)
            if not timing:
                writer.start(step)  # the first call compiled; speed counts from here
                timing = True
            pending = metrics
            if step % t.checkpoint_every == 0:
                checkpoints.save(state, iterator)
            if evaluation is not None and evaluation.due(step):
                # Outside the mesh context: the sampler runs on the weights' own shardings (or, under several
                # processes, on each process's devices), not under the training step's constraints.
                _check(pending, writer, t.max_bad_steps)
                pending = None
                started = time.perf_counter()
                values = evaluation.evaluate(state, step)
                writer.record_eval(step, {**values, "seconds": round(time.perf_counter() - started, 3)})
                writer.start(step)  # the evaluation's time is not training speed
            if stop.requested():
                log.info("SIGTERM: saving step %d and exiting", step)
                checkpoints.save(state, iterator, force=True)
                break
        if pending is not None:
            _check(pending, writer, t.max_bad_steps)
        if step >= t.steps:
            checkpoints.save(state, iterator, force=True)
    finally:
        checkpoints.wait()
        checkpoints.close()
        writer.close()
        stop.restore()
    return state


def _check(metrics: dict, writer: MetricsWriter, max_bad_steps: int) -> None:
    host = jax.device_get(metrics)
    writer.record(host)
    bad, step = int(host["bad_steps"]), int(host["step"])
    if not bool(host["finite"]):
        log.warning("step %d: non-finite loss or gradient; update skipped (%d in a row)", step, bad)
    if bad >= max_bad_steps:
        raise NonFiniteLossError(f"the loss or gradient was not finite for {bad} steps in a row, steps "
                                 f"{step - bad + 1}-{step}; stopped at step {step}. Lower train.lr, check the "
                                 "data, or raise train.max_bad_steps.")
