"""Options are declared once, on the config fields: `tmv train`'s flags, the YAML keys and a run's
saved config.yaml all come from them and cannot disagree."""

from __future__ import annotations

import dataclasses

import click
import pytest
import yaml
from tinymvlm.cli.train_cmd import train as train_command

from tinymvlm.errors import TmvError
from tinymvlm.models.config import ModelConfig
from tinymvlm.options import from_flat, options_of
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.run_config import read_config, write_config

NOT_OPTIONS = {"config_path", "nproc", "verbose"}  # flags of the command, not of the run


def test_every_option_has_exactly_one_flag_with_its_default_and_help():
    options = options_of(TrainConfig)
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "model"]
    assert sorted(o.name for o in options) == sorted(fields + [f.name for f in dataclasses.fields(ModelConfig)])
    params = {p.name: p for p in train_command.params if p.name not in NOT_OPTIONS}
    assert sorted(params) == sorted(o.name for o in options)
    for option in options:
        param = params[option.name]
        assert param.default == option.default, option.name
        assert param.help == option.help and option.help, option.name
        assert param.opts == [option.flag], option.name
        if option.type is bool:
            assert param.is_flag and param.secondary_opts, option.name
        elif option.choices:
            assert list(param.type.choices) == list(option.choices), option.name
        else:
            assert param.type.name == click.types.convert_type(option.type).name, option.name


def test_the_default_text_model_is_written_once():
    from tinymvlm.models.towers import DEFAULT_TEXT_MODEL

    assert ModelConfig().text_model == DEFAULT_TEXT_MODEL
    assert {p.name: p.default for p in train_command.params}["text_model"] == DEFAULT_TEXT_MODEL


def test_a_yaml_with_every_key_round_trips(tmp_path):
    changed = {}
    for option in options_of(TrainConfig):  # a value other than the default for every option
        if option.type is bool:
            changed[option.name] = not option.default
        elif option.choices:
            changed[option.name] = [c for c in option.choices if c != option.default][0]
        elif option.name in ("val_fraction", "wise_alpha"):  # fractions
            changed[option.name] = 0.25
        elif option.type in (int, float):
            changed[option.name] = option.type(3 if option.default is None else option.default + 3)
        else:
            changed[option.name] = f"some-{option.name}"
    cfg = from_flat(TrainConfig, changed, "test")
    assert cfg.to_dict() == changed
    file = tmp_path / "all.yaml"
    file.write_text(yaml.safe_dump(changed))
    assert read_config(file) == cfg
    write_config(tmp_path, cfg)  # what a run saves: the same flat keys, less how it was started
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved == {**changed, "resume": None}
    assert read_config(tmp_path / "config.yaml") == dataclasses.replace(cfg, resume=None)


def test_wrong_types_and_choices_are_one_line_errors(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("epochs: ten\n")
    with pytest.raises(TmvError, match=f"config {file}: epochs must be int, not 'ten'"):
        read_config(file)
    file.write_text("lr: 1e-3\n")  # YAML 1.1 reads this as a string
    assert read_config(file).lr == 0.001
    file.write_text("precision: fp16\n")
    with pytest.raises(TmvError, match="precision must be one of auto, fp32, bf16, not 'fp16'"):
        read_config(file)


def test_a_nested_model_section_is_read_as_its_keys(tmp_path):
    """config.yaml as runs wrote it before options were flat."""
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump({"epochs": 2, "model": {"head": "linear", "embed_dim": 8}}))
    cfg = read_config(file)
    assert (cfg.epochs, cfg.model.head, cfg.model.embed_dim) == (2, "linear", 8)
