"""emo-summary builds the paper-scale models abstractly and counts their parameters."""
import json

from emo_jax.cli.summary import main


def test_sd_variant_is_exactly_sd15(tmp_path, capsys):
    out = tmp_path / "sd.json"
    assert main(["--config", "configs/emo_512.py:sd", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["total"] == 859_520_964  # diffusers' UNet2DConditionModel for SD1.5
    assert "859,520,964" in capsys.readouterr().out


def test_stage2_reports_every_module(tmp_path):
    out = tmp_path / "s2.json"
    assert main(["--config", "configs/emo_512.py:stage2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    modules = report["modules"]
    assert set(modules) == {"vae", "reference_net", "backbone", "audio_proj", "audio_attention", "temporal",
                            "face_locator"}
    assert modules["vae"] == 83_653_863  # SD1.5's AutoencoderKL
    assert modules["temporal"] == 453_209_280  # AnimateDiff v2 (mm_sd_v15_v2) layout, pe buffers not counted
    assert report["total"] == sum(modules.values())
    assert report["trainable"] == report["total"] - modules["vae"]  # stage 2 trains everything but the VAE


def test_stage3_trains_only_temporal_and_speed(tmp_path):
    out = tmp_path / "s3.json"
    assert main(["--config", "configs/emo_512.py:stage3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["trainable"] == report["modules"]["temporal"] + report["modules"]["speed"]


def test_unknown_config_key_is_a_usage_error(capsys):
    assert main(["--config", "configs/emo_512.py:stage2", "--config.model.unet.blocks", "3"]) == 2
    assert "unknown config key 'model.unet.blocks'" in capsys.readouterr().err
