"""The launchers' --dry-run prints exactly what they would run."""
import subprocess
import sys


def _dry(script, *args):
    out = subprocess.run([sys.executable, f"launch/{script}", *args, "--dry-run"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def test_tpu_pod_creates_installs_and_runs_on_every_worker():
    lines = _dry("tpu_pod.py", "--name", "emo", "--accelerator", "v5p-128", "--repo", "https://x/emo-jax.git",
                 "--commit", "abc123", "--config", "configs/emo_512.py:stage2", "--workdir", "gs://b/run",
                 "--config.train.lr", "2e-5")
    assert len(lines) == 3
    assert lines[0].startswith("gcloud compute tpus tpu-vm create emo") and "--accelerator-type=v5p-128" in lines[0]
    assert "--worker=all" in lines[1] and "git checkout -q abc123" in lines[1] and "-c constraints.txt" in lines[1]
    assert "--worker=all" in lines[2]
    assert "emo-train --config configs/emo_512.py:stage2 --workdir gs://b/run --config.train.lr 2e-5" in lines[2]


def test_tpu_pod_xpk_alternative():
    lines = _dry("tpu_pod.py", "--name", "emo", "--accelerator", "v5litepod-64", "--repo", "r", "--config", "c",
                 "--workdir", "w", "--xpk-cluster", "cl")
    assert len(lines) == 1 and lines[0].startswith("xpk workload create --cluster cl --workload emo")
    assert "--tpu-type v5litepod-64" in lines[0]


def test_slurm_script_runs_one_task_per_gpu():
    lines = _dry("slurm_gpu.py", "--nodes", "4", "--gpus-per-node", "8", "--config", "c.py:stage2", "--workdir",
                 "/tmp/emo-run")
    assert "#SBATCH --nodes=4" in lines and "#SBATCH --ntasks-per-node=8" in lines
    assert "srun --kill-on-bad-exit=1 emo-train --config c.py:stage2 --workdir /tmp/emo-run" in lines
    assert lines[-1] == "sbatch /tmp/emo-run/emo-train.sbatch"


def test_local_multi_process_shares_one_coordinator():
    lines = _dry("local.py", "--config", "configs/tiny.py:stage1", "--workdir", "/tmp/r", "--processes", "2")
    assert len(lines) == 2
    coords = {line.split("--coordinator ")[1].split()[0] for line in lines}
    assert len(coords) == 1 and "--process-id 0" in lines[0] and "--process-id 1" in lines[1]


def test_unknown_flags_are_refused():
    out = subprocess.run([sys.executable, "launch/local.py", "--config", "c", "--workdir", "w", "--bogus", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--bogus" in out.stderr
