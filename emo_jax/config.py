"""Config files (`configs/<name>.py:variant`), command-line overrides, and the model config they describe."""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import sys
import typing

import ml_collections

from emo_jax.errors import ConfigError
from emo_jax.models.emo import EMOConfig
from emo_jax.models.unet_config import UNetConfig
from emo_jax.paths import require_file


def load_config(spec: str) -> ml_collections.ConfigDict:
    """'configs/emo_512.py:stage2' -> the ConfigDict its get_config('stage2') returns."""
    path, _, arg = spec.partition(":")
    require_file(path, "config file", "pass e.g. configs/tiny.py or configs/emo_512.py:stage2", ConfigError)
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if root not in sys.path:  # lets config files import their siblings as `configs.<name>`
        sys.path.insert(0, root)
    name = "emo_config_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} has no get_config(arg) function")
    try:
        return module.get_config(arg or None)
    except ValueError as e:
        raise ConfigError(f"{spec}: {e}") from e


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Sets config.<dotted> from its command-line text; an unknown key is an error naming the nearest section."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, key in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            raise ConfigError(f"unknown config key {'.'.join(parents[:i + 1])!r} in --config.{dotted}")
        node = node[key]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        section = ".".join(parents) or "<top>"
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(f"unknown config key {dotted!r}: section {section!r} has {known}")
    old, value = node[leaf], _parse_value(text)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if old is not None and value is not None and not isinstance(value, type(old)) and not (
            isinstance(old, str) and isinstance(value, (int, float))):
        raise ConfigError(f"--config.{dotted} {text!r}: expected a {type(old).__name__} like {old!r}")
    node[leaf] = str(text) if isinstance(old, str) else value


def split_overrides(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pulls every `--config.a.b VALUE` / `--config.a.b=VALUE` out of argv: (overrides, the other arguments)."""
    overrides, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key = arg[len("--config."):]
            if "=" in key:
                key, value = key.split("=", 1)
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value")
                value = argv[i + 1]
                i += 1
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def load_with_overrides(spec: str, overrides: list[tuple[str, str]]) -> ml_collections.ConfigDict:
    """The config `spec` names, with each (dotted key, command-line text) override set in order, then locked:
    code that sets a key the config does not have raises instead of adding a field nothing reads."""
    config = load_config(spec)
    for key, value in overrides:
        override(config, key, value)
    config.lock()
    return config


def parse_config_args(argv: list[str], default: str | None = None) -> tuple[ml_collections.ConfigDict, list[str]]:
    """Pulls `--config SPEC` and any `--config.a.b VALUE` / `--config.a.b=VALUE` out of argv."""
    overrides, argv = split_overrides(argv)
    spec, rest = default, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" or arg.startswith("--config="):
            if "=" in arg:
                spec = arg.split("=", 1)[1]
            else:
                if i + 1 >= len(argv):
                    raise ConfigError("--config needs a value such as configs/tiny.py:stage2")
                spec = argv[i + 1]
                i += 1
        else:
            rest.append(arg)
        i += 1
    if spec is None:
        raise ConfigError("pass --config FILE[:VARIANT], e.g. --config configs/tiny.py:stage2")
    return load_with_overrides(spec, overrides), rest


def section(cls: type, node: ml_collections.ConfigDict, where: str, ignore: tuple[str, ...] = ()):
    """The dataclass `cls` built from a config section with **section: every key a field of the same name, nested
    dataclass fields from sub-sections, lists as tuples; a key the dataclass lacks is a ConfigError naming it."""
    fields = {f.name for f in dataclasses.fields(cls)}
    types = typing.get_type_hints(cls)
    unknown = sorted(set(node.keys()) - fields - set(ignore))
    if unknown:
        raise ConfigError(f"unknown keys in {where}: {unknown}; {cls.__name__} has {sorted(fields)}")
    values = {}
    for key in fields & set(node.keys()):
        value = node[key]
        if isinstance(value, ml_collections.ConfigDict) and dataclasses.is_dataclass(types[key]):
            value = section(types[key], value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def unet_config(config: ml_collections.ConfigDict) -> UNetConfig:
    return section(UNetConfig, config.model.unet, "model.unet")


def model_config(config: ml_collections.ConfigDict) -> EMOConfig:
    """The EMOConfig of a config's `model` section (for sd mode use unet_config alone)."""
    return section(EMOConfig, config.model, "model")
