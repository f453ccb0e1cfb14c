"""`tmv train` from the command line: YAML configs, overrides, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import yaml
from click.testing import CliRunner
from tinymvlm.cli.main import cli


def _tiny_flags(tiny_model_config) -> list[str]:
    return ["--image-model", tiny_model_config.image_model, "--text-model", tiny_model_config.text_model,
            "--no-pretrained", "--embed-dim", "16", "--image-size", "32", "--workers", "0"]


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "tinymvlm.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "index", "search", "eval"):
        assert f"  {command} " in result.stdout


def test_yaml_config_with_flag_overrides_is_saved_resolved(tiny_model_config, colour_folder, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": str(colour_folder), "epochs": 3, "batch_size": 4, "val_fraction": 0.0,
                                      "head": "linear"}))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--epochs", "1", "--out-dir", str(out),
                                      *_tiny_flags(tiny_model_config)])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 4 and saved["head"] == "linear"
    assert (out / "best.safetensors").is_file()


def test_unknown_yaml_key_is_a_one_line_error(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochz: 3\n")
    result = CliRunner().invoke(cli, ["train", "--config", str(config)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: unknown option(s) in config {config}: epochz"


def test_wrong_data_path_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "absent.tsv")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --data {tmp_path / 'absent.tsv'}: no such file or folder"


def test_unknown_model_name_is_a_one_line_error(colour_folder):
    result = CliRunner().invoke(cli, ["train", "--data", str(colour_folder), "--image-model", "no_such_net"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "unknown image model 'no_such_net'" in result.output


def test_resume_latest_without_a_run_folder_is_explained():
    result = CliRunner().invoke(cli, ["train", "--resume", "latest"])
    assert result.exit_code == 2
    assert "--out-dir" in result.output
