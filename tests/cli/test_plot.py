"""Pictures of how a run went: `tmv plot`, the curves `tmv train` redraws every epoch, TensorBoard
scalars, `tmv eval --plot`, and progress as plain lines when stderr is not a terminal."""

from __future__ import annotations

import io
import json
import sys

import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console
from tinymvlm.cli import plain_progress
from tinymvlm.cli.main import cli
from tinymvlm.cli.plain_progress import PlainProgress
from tinymvlm.training.curves import metrics_path, read_curves

# Epoch 2 has the best mean of R@1/5/10 both ways (40); epoch 3 the best R@1 alone (60, mean 33.3).
VALS = {1: (50, 10, 10), 2: (40, 40, 40), 3: (60, 20, 20)}


def _hand_written_run(folder, alpha=0.75, validated=True):
    folder.mkdir()
    lines = []
    for step in range(1, 31):
        lines.append({"type": "step", "step": step, "epoch": (step - 1) // 10 + 1, "loss": 3.0 - step / 20, "lr": 1e-3})
        if step % 10 == 0:
            epoch = step // 10
            record = {"type": "epoch", "step": step, "epoch": epoch, "train_loss": 3.0 - epoch / 2, "pairs_per_s": 100.0}
            if validated:
                r1, r5, r10 = VALS[epoch]
                record["val"] = {f"{d}_R@{k}": v for d in ("t2i", "i2t") for k, v in ((1, r1), (5, r5), (10, r10))}
                record["val_wise_alpha"] = alpha
            lines.append(record)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_plot_marks_the_epoch_with_the_best_mean_recall(tmp_path):
    run = _hand_written_run(tmp_path / "run")
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(tmp_path / "c.svg")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "c.svg")
    svg = (tmp_path / "c.svg").read_text()
    assert "best: epoch 2" in svg
    assert "validation recall of the WiSE-FT mix (alpha 0.75)" in svg
    assert "3 epoch(s), 30 steps" in svg
    assert "text → image R@1" in svg and "image → text R@10" in svg and "training loss" in svg


def test_plot_writes_a_two_panel_png_into_the_run_by_default(tmp_path):
    run = _hand_written_run(tmp_path / "run", alpha=1.0)
    result = CliRunner().invoke(cli, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1320, 495)
        assert len(image.convert("RGB").getcolors(1 << 20)) > 50  # drawn, not a blank canvas


def test_a_run_without_validation_gets_the_loss_alone(tmp_path):
    run = _hand_written_run(tmp_path / "run", validated=False)
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(tmp_path / "c.svg")])
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "c.svg").read_text()
    assert "training loss" in svg and "validation recall" not in svg and "best:" not in svg


def test_plot_errors_are_one_line(tmp_path):
    run = _hand_written_run(tmp_path / "run")
    for args, words in ((["plot", str(tmp_path)], "does not exist"),
                        (["plot", str(run), "-o", str(tmp_path / "c.jpg")], "name a .png or .svg file"),
                        (["plot", str(tmp_path / "nope.txt")], "is not a run folder")):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and words in result.output and len(result.output.strip().splitlines()) == 1, result.output
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"type": "step", "ste\n')
    result = CliRunner().invoke(cli, ["plot", str(run)])
    assert result.exit_code == 2 and "line 34: not a JSON record" in result.output


def test_best_epoch_matches_the_trainers_rule(tmp_path):
    curves = read_curves(metrics_path(_hand_written_run(tmp_path / "run")))
    assert curves.best_epoch()["epoch"] == 2 and len(curves.steps) == 30


def _tiny_flags(tiny_model_config) -> list[str]:
    return ["--image-model", tiny_model_config.image_model, "--text-model", tiny_model_config.text_model,
            "--no-pretrained", "--embed-dim", "16", "--image-size", "32", "--workers", "0", "--batch-size", "4",
            "--val-fraction", "0.3", "--head", "linear"]


def test_train_redraws_curves_every_epoch_says_so_once_and_logs_plain_lines(tiny_model_config, colour_folder, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(colour_folder), "--epochs", "2", "--out-dir", str(run),
                                      *_tiny_flags(tiny_model_config)])
    assert result.exit_code == 0, result.output
    assert result.output.count("training curves:") == 1 and str(run / "curves.png") in result.output
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG"
    assert read_curves(run / "metrics.jsonl").epochs[-1]["epoch"] == 2
    # Not a terminal: no live bar redraws (carriage returns, cursor codes), but the finished task's line.
    assert "\r" not in result.output and "\x1b[" not in result.output
    assert any(line.startswith("epoch 2  ") and line.rstrip().endswith("s") and " in " in line
               for line in result.output.splitlines()), result.output


def test_tensorboard_scalars(tiny_model_config, colour_folder, tmp_path):
    pytest.importorskip("torch.utils.tensorboard", reason="the tensorboard package (dev extra) is not installed")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(colour_folder), "--epochs", "1", "--out-dir", str(run),
                                      "--tensorboard", *_tiny_flags(tiny_model_config)])
    assert result.exit_code == 0, result.output
    events = b"".join(p.read_bytes() for p in (run / "tensorboard").glob("events.out.tfevents.*"))
    for tag in (b"train/loss", b"train/lr", b"train/epoch_loss", b"val/t2i_R@1", b"val/i2t_R@10"):
        assert tag in events, tag


def test_tensorboard_without_the_package_is_a_one_line_error_before_any_work(tiny_model_config, colour_folder,
                                                                              tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what a missing package raises
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(colour_folder), "--epochs", "1", "--out-dir", str(run),
                                      "--tensorboard", *_tiny_flags(tiny_model_config)])
    assert result.exit_code == 2
    assert "--tensorboard needs the tensorboard package: pip install tensorboard" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not run.exists()


def test_eval_plot_draws_recall_against_k_with_the_tables_figures(tiny_checkpoint, colour_folder, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{p}\ta plain {p.stem} square\n" for p in sorted(colour_folder.glob("*.png"))))
    result = CliRunner().invoke(cli, ["eval", "--model", str(tiny_checkpoint), "--data", str(pairs), "1", "2",
                                      "--plot", str(tmp_path / "r.svg"), "--json", str(tmp_path / "r.json"),
                                      "--workers", "0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    svg = (tmp_path / "r.svg").read_text()
    assert "text → image" in svg and "image → text" in svg and "recall@k %" in svg
    for key in ("t2i_R@1", "t2i_R@2", "i2t_R@1", "i2t_R@2"):  # the marked points carry the table's figures
        assert f">{metrics[key]:.1f}<" in svg, key


def test_recall_curve_against_ranks_worked_by_hand():
    import numpy as np
    from tinymvlm.evaluation.recall_curve import recall_curve
    from tinymvlm.evaluation.retrieval import EmbeddedPairs

    images = np.eye(3, dtype=np.float32)
    texts = np.array([[1, 0, 0], [0, 0.5, 0.9], [0.9, 0.5, 0.1]], dtype=np.float32)
    # text->image ranks of captions 0, 1, 2: 1, 2, 3. image->text: image 0 -> 1; image 1 ties caption 2
    # (0.5 each) -> 1; image 2 has caption 1 above its own (0.9 > 0.1) -> 2.
    curve = recall_curve(EmbeddedPairs(images, texts, np.array([0, 1, 2]), ["a", "b", "c"]), [1, 2])
    assert curve.ks == [1, 2, 3] and curve.marked == [1, 2]
    assert curve.t2i == pytest.approx([100 / 3, 200 / 3, 100])
    assert curve.i2t == pytest.approx([200 / 3, 100, 100])


def test_eval_plot_refuses_another_format_before_evaluating(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--model", str(tmp_path / "missing.safetensors"), "--plot", "r.pdf"])
    assert result.exit_code == 2 and "name a .png or .svg file" in result.output


def test_plain_progress_prints_rate_eta_and_a_finished_line(monkeypatch):
    monkeypatch.setattr(plain_progress, "PLAIN_EVERY_S", 0.0)
    stream = io.StringIO()
    progress = PlainProgress(console=Console(file=stream, width=60, force_terminal=False))
    progress.start()
    task = progress.add_task("embedding images", total=4, rate="")
    for done in range(1, 4):
        progress.update(task, completed=done, rate=f"{done * 10}.0 images/s")
    progress.update(task, completed=3, rate="31.0 images/s")  # the same count again: nothing new to say
    progress.update(task, completed=4, rate="40.0 images/s")
    progress.update(task, completed=4)  # finished once: said once
    progress.stop()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("embedding images  1/4  10.0 images/s")
    assert lines[-1].startswith("embedding images  4/4  40.0 images/s  in ") and lines[-1].endswith("s")
    assert len(lines) == 4 and "\r" not in stream.getvalue()
