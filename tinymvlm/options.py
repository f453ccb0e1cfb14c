"""Options declared once: each config field carries its default and its help text, and `tmv train`'s
flags, the YAML keys and a run's saved config.yaml are all derived from the fields.

A config file is flat: its keys are the flags' names (`image_model`, `epochs`...), whether the field
lives on TrainConfig or on its ModelConfig.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Sequence


def option(default: Any, help: str, *, choices: Sequence[str] | None = None, off: str | None = None,
           flag: str | None = None) -> Any:
    """A dataclass field with its help; `choices` limits a string, `off` names a boolean's negative
    flag (default `--no-NAME`), `flag` the command-line flag when it is not `--NAME` (the YAML key
    stays the field's name)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "off": off, "flag": flag})


@dataclass(frozen=True)
class Option:
    """One flat option: its name (the YAML key; `--name-with-dashes` on the command line), the plain
    type of its value, and the field that declared it."""

    name: str
    type: type
    default: Any
    help: str
    choices: Sequence[str] | None
    off: str | None
    nested: str | None  # the field of the outer config that holds it (ModelConfig's options: "model")
    flag_override: str | None = None

    @property
    def flag(self) -> str:
        return self.flag_override or "--" + self.name.replace("_", "-")


def _plain(annotation: Any) -> type:
    """`int | None` -> int: what a given value is converted to."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def options_of(cls: type) -> list[Option]:
    """The flat options of a config dataclass, in declaration order; a field whose type is itself a
    config dataclass contributes its own options in its place."""
    hints = typing.get_type_hints(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        kind = _plain(hints[f.name])
        if dataclasses.is_dataclass(kind):
            out += [dataclasses.replace(o, nested=f.name) for o in options_of(kind)]
            continue
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with option(default, help)")
        out.append(Option(f.name, kind, f.default, f.metadata["help"], f.metadata["choices"], f.metadata["off"], None,
                          f.metadata.get("flag")))
    return out


def to_flat(config: Any) -> dict[str, Any]:
    """A config as one flat mapping of option names to values (what config.yaml holds)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(to_flat(value))
        else:
            out[f.name] = value
    return out


def from_flat(cls: type, values: dict[str, Any], where: str) -> Any:
    """A config from a flat mapping; unknown names and values of the wrong type are errors naming
    `where` (the file or the flags they came from)."""
    from tinymvlm.errors import TmvError

    options = {o.name: o for o in options_of(cls)}
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise TmvError(f"unknown option(s) in {where}: {', '.join(unknown)}")
    outer: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        option = options[name]
        value = _checked(option, value, where)
        (nested.setdefault(option.nested, {}) if option.nested else outer)[name] = value
    hints = typing.get_type_hints(cls)
    for field_name, fields in nested.items():
        outer[field_name] = _plain(hints[field_name])(**fields)
    return cls(**outer)


def _checked(option: Option, value: Any, where: str) -> Any:
    from tinymvlm.errors import TmvError

    if value is None or isinstance(value, option.type) and not (option.type is int and isinstance(value, bool)):
        return value
    if option.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if option.type in (int, float) and isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            return option.type(value)
        except ValueError:
            pass
    raise TmvError(f"{where}: {option.name} must be {option.type.__name__}, not {value!r}")


def check_choices(config: Any) -> None:
    """Refuse a value outside its field's declared choices."""
    from tinymvlm.errors import TmvError

    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise TmvError(f"{f.name} must be one of {', '.join(choices)}, not '{getattr(config, f.name)}'")
