"""Training metrics: TensorBoard event files and a metrics.jsonl in the workdir, and a console progress line."""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

log = logging.getLogger(__name__)


class MetricsWriter:
    """Averages per-step metrics over train.log_every steps and writes them (process 0 only writes)."""

    def __init__(self, workdir: str, total_steps: int, global_batch: int, every: int, enabled: bool = True,
                 resume_step: int = 0):
        """`resume_step`: the step the run starts from; rows and events after it (logged by a run that was killed
        before its next checkpoint) are dropped, so a resumed run leaves one row per step."""
        if every < 1:
            raise ValueError(f"train.log_every must be >= 1, got {every}")
        self.total_steps, self.global_batch, self.every, self.enabled = total_steps, global_batch, every, enabled
        self._losses, self._grad_norms, self._since = [], [], None
        self._writer, self._jsonl = None, None
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.jsonl")
            _drop_rows_after(path, resume_step)
            # purge_step hides the killed run's events from that step on, as TensorBoard shows them. The event file
            # is named by the second it was opened in; the suffix keeps a resume within that second from
            # overwriting the file of the run it resumes.
            self._writer = SummaryWriter(logdir=workdir, purge_step=resume_step + 1 if resume_step else None,
                                         filename_suffix=f".from_step_{resume_step}")
            self._jsonl = open(path, "a", encoding="utf-8")

    def start(self, step: int) -> None:
        """Marks the time and step the speed measurement counts from (after compilation, say)."""
        self._since = (time.perf_counter(), step)

    def record(self, metrics: dict) -> None:
        """Takes one step's host metrics (from the train step) and writes a summary every `every` steps."""
        step = int(metrics["step"])
        if bool(metrics["finite"]):
            self._losses.append(float(metrics["loss"]))
            self._grad_norms.append(float(metrics["grad_norm"]))
        if step % self.every and step != self.total_steps:
            return
        now = time.perf_counter()
        since_time, since_step = self._since or (now, step)
        steps_per_s = (step - since_step) / (now - since_time) if now > since_time else 0.0
        summary = {
            "step": step,
            "loss": float(np.mean(self._losses)) if self._losses else float("nan"),
            "grad_norm": float(np.mean(self._grad_norms)) if self._grad_norms else float("nan"),
            "lr": float(metrics["lr"]),
            "steps_per_s": steps_per_s,
            "examples_per_s": steps_per_s * self.global_batch,
            "skipped": int(metrics["skipped"]),
        }
        self._losses, self._grad_norms, self._since = [], [], (now, step)
        if not self.enabled:
            return
        for name, value in summary.items():
            if name != "step":
                self._writer.add_scalar(f"train/{name}", value, step)
        self._jsonl.write(json.dumps(summary) + "\n")
        self._jsonl.flush()
        log.info("step %d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.2f steps/s | %.1f examples/s%s", step,
                 self.total_steps, summary["loss"], summary["lr"], summary["grad_norm"], steps_per_s,
                 summary["examples_per_s"], f" | skipped {summary['skipped']}" if summary["skipped"] else "")

    def record_eval(self, step: int, values: dict) -> None:
        """Writes one periodic evaluation (emo_jax/train/evaluate.py): TensorBoard eval/<name> for every number,
        and a metrics.jsonl row {"step": step, "eval": values} (null where a measure was not computed)."""
        if not self.enabled:
            return
        for name, value in values.items():
            if value is not None:
                self._writer.add_scalar(f"eval/{name}", value, step)
        self._writer.flush()
        self._jsonl.write(json.dumps({"step": step, "eval": values}) + "\n")
        self._jsonl.flush()
        log.info("step %d evaluation | %s", step, " | ".join(
            f"{name} {'not computed' if value is None else format(value, '.4g')}" for name, value in values.items()))

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._jsonl.close()


def _drop_rows_after(path: str, step: int) -> None:
    """Rewrites metrics.jsonl (atomically) without rows past `step` or a last line cut short by a kill."""
    if not os.path.isfile(path):
        return
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if row.get("step", 0) <= step:
                kept.append(json.dumps(row) + "\n")
            else:
                dropped += 1
    if not dropped:
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    log.info("metrics.jsonl: dropped %d rows after step %d, logged by the run that was stopped before saving them",
             dropped, step)
