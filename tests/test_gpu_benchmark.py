"""benchmarks/gpu.py: its import path, its peak table, and (slow) a whole CPU run through the attention fallback.

The slow test takes ~3 minutes on a 2-core CPU (compiling the tiny stage-2 step): pytest -m slow
tests/test_gpu_benchmark.py.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.py")
# Not on the GPU image: the benchmark must not need them.
ABSENT = ("grain", "array_record", "av", "tensorboardX", "cv2")


def _run_without_absent(code: str, **kwargs) -> subprocess.CompletedProcess:
    block = f"import sys; [sys.modules.__setitem__(m, None) for m in {ABSENT!r}]; "
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", block + code], cwd=ROOT, env=env, capture_output=True, text=True,
                          **kwargs)


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_without_modules_the_gpu_image_lacks():
    code = (f"import importlib.util; s = importlib.util.spec_from_file_location('g', {SCRIPT!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "from emo_jax.sample.sampler import Sampler; print('imported')")
    done = _run_without_absent(code, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported" in done.stdout


def test_peak_bf16_flops_by_device_kind():
    peak = _benchmark_module().peak_bf16_flops
    assert peak("NVIDIA H100 80GB HBM3") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12
    assert peak("NVIDIA H200") == 989e12
    assert peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak("Tesla T4") is None


@pytest.mark.slow
def test_cpu_run_falls_back_from_cudnn_and_writes_every_section(tmp_path):
    out = tmp_path / "gpu_cpu.json"
    argv = ["gpu.py", "--attention", "cudnn", "--warmup", "0", "--steps", "1", "--out", str(out)]
    done = _run_without_absent(f"import runpy; sys.argv = {argv!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')",
                               timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["platform"] == "cpu" and res["notice"] and res["config"] == "configs/tiny.py:stage2"
    train, flops, sampling = res["train"], res["flops"], res["sampling"]
    assert train["status"] == "ok", train.get("error")
    assert [e["attention_impl"] for e in train["attention_errors"]] == ["cudnn"]  # no cuDNN on a CPU
    assert train["attention_impl"] == "chunked" and train["step_s"] > 0 and len(train["step_times_s"]) == 1
    assert flops["status"] == "ok" and flops["model_flops_per_step"] > 0
    assert flops["hardware_flops_per_step"] == flops["model_flops_per_step"]  # the tiny config has no remat
    assert flops["mfu"] is None  # no bf16 peak for a CPU
    assert sampling["status"] == "ok" and sampling["finite"] and sampling["attention_impl"] == "chunked"
    assert sampling["model_flops_per_clip"] > 0 and sampling["clip_s"] > 0
