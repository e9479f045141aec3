"""Strict, layered configuration: dataclass defaults < YAML file < `--section.key=value` overrides.

A config is a frozen dataclass whose fields are sections (themselves frozen dataclasses). Every
field has a default and a docstring-style comment with its unit. Unknown keys and values of the
wrong type fail with a one-line `ConfigError` that lists the valid keys, so a typo never silently
trains the wrong model.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import math
import re
import textwrap
import types
import typing
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the problem and the fix."""


class RangeError(ConfigError):
    """A known key with a value outside its valid range (the message gives the range, not the keys)."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: docstring} of a config dataclass, read from the string under each field."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


_RANGE = re.compile(r"[Rr]ange ([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])")


def field_range(cls: type, name: str) -> str | None:
    """The valid range a field's docstring declares, as written there ('[1, inf)', '(0, 1]'), or None."""
    match = _RANGE.search(field_docs(cls).get(name, ""))
    return None if match is None else f"{match[1]}{match[2]}, {match[3]}{match[4]}"


def in_range(value: float, interval: str) -> bool:
    """Whether `value` lies in an interval written like '[0, 1)' or '(0, inf)'."""
    match = _RANGE.match(f"range {interval}")
    lo, hi = float(match[2]), float(match[3])
    above = value >= lo if match[1] == "[" else value > lo
    below = value <= hi if match[4] == "]" else value < hi
    return above and below


def _check_number(cls: type, name: str, key: str, value: Any) -> None:
    """Refuse NaN/inf everywhere and a value outside the field's declared range."""
    values = value if isinstance(value, tuple) else (value,)
    interval = field_range(cls, name)
    for v in values:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        if not math.isfinite(v):
            raise RangeError(f"{key}={v} is not a finite number; give a value in {interval or 'range'}")
        if interval and not in_range(v, interval):
            raise RangeError(f"{key}={v} is out of range; give a value in {interval}")


def bounded(kind: type, interval: str) -> Callable[[str], Any]:
    """An argparse `type=` for CLI numbers: parses `kind`, refuses NaN/inf and values outside
    `interval` (written like '[1, inf)'), naming the valid range."""

    def parse(text: str) -> Any:
        try:
            value = kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except (ValueError, OverflowError):  # int(float("1e400")) overflows
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if not math.isfinite(value) or not in_range(value, interval):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give a value in {interval}")
        return value

    return parse


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """All dotted keys a config class accepts, e.g. ['train.max_steps', ...]."""
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(valid_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("null", "none") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        return tuple(_coerce(v, item_tp, key) for v in value)
    if dataclasses.is_dataclass(tp):  # an item of a list of mappings (data.sources)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping of {list(_field_types(tp))}, got {value!r}")
        types_ = _field_types(tp)
        unknown = sorted(set(value) - set(types_))
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {unknown}; valid: {list(types_)}")
        item = {k: _coerce(v, types_[k], f"{key}.{k}") for k, v in value.items()}
        for k, v in item.items():
            _check_number(tp, k, f"{key}.{k}", v)
        return tp(**item)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if "e" in value.lower() else int(value)
            except (ValueError, OverflowError):  # int(float("1e400")) overflows
                pass
        raise ConfigError(f"{key} expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} expects a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _parse_cli_value(text: str) -> Any:
    """CLI values are parsed as YAML scalars so `--a.b=3`, `=true`, `=[1,2]` behave like the file."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def parse_overrides(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split argv into positional arguments and a {dotted_key: value} dict of `--a.b=v` overrides."""
    positional, overrides = [], {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        key, sep, value = arg[2:].partition("=")
        if not sep:
            nxt = next(it, None)
            if nxt is None or nxt.startswith("--"):
                raise ConfigError(f"--{key} has no value; write --{key}=VALUE")
            value = nxt
        overrides[key.replace("-", "_")] = _parse_cli_value(value)
    return positional, overrides


def pop_options(
    argv: list[str], value_options: Collection[str], flags: Collection[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """A command's own options pulled out of argv: ({name: value} for `--name VALUE`, `--name=VALUE`
    and each `--flag` ("true"), names without the dashes), and the other arguments in their order."""
    own, rest, it = {}, [], iter(argv)
    for arg in it:
        name, sep, value = arg.partition("=")
        if name in flags:
            own[name[2:]] = "true"
        elif name in value_options:
            own[name[2:]] = value if sep else next(it, "")
        else:
            rest.append(arg)
    return own, rest


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as one flat {dotted_key: value} dict: {"train": {"seed": 1}} -> {"train.seed": 1}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(
                    f"key {key!r} is given twice in one mapping (line {key_node.start_mark.line + 1}); "
                    "keep one of them"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a flat {dotted_key: value} dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        tree = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"config file {path} is not valid YAML ({err.__class__.__name__}); fix its syntax"
        ) from err
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(tree).__name__}")
    return flatten(tree)


def build_config(cls: type[T], *layers: dict[str, Any]) -> T:
    """Instantiate `cls` from defaults updated by flat dotted-key layers, later layers winning."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    keys = valid_keys(cls)
    for key in [k for k in merged if any(v.startswith(f"{k}.") for v in keys)]:
        if merged[key] is not None:  # `train:` with every key commented out is an empty section
            example = next(v for v in keys if v.startswith(f"{key}."))
            raise ConfigError(
                f"{key} is a section, not a value (got {merged[key]!r}): give its keys as a mapping, "
                f"e.g. {key}: {{{example.rpartition('.')[2]}: ...}} in YAML or --{example}=... on the command line"
            )
        del merged[key]
    unknown = sorted(k for k in merged if k not in keys)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(keys)}")
    try:
        return _instantiate(cls, merged, "")
    except RangeError:
        raise
    except ConfigError as err:
        raise ConfigError(f"{err}; valid keys: {', '.join(keys)}") from None


def _instantiate(cls: type[T], flat: dict[str, Any], prefix: str) -> T:
    kwargs = {}
    for name, tp in _field_types(cls).items():
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _instantiate(tp, flat, f"{key}.")
        elif key in flat:
            kwargs[name] = _coerce(flat[key], tp, key)
            _check_number(cls, name, key, kwargs[name])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from None


def parse_config(cls: type[T], argv: list[str], default_file: str | Path | None = None) -> T:
    """Build `cls` from an optional default YAML, an optional positional YAML, then `--key=value`s."""
    positional, overrides = parse_overrides(argv)
    if len(positional) > 1:
        raise ConfigError(f"expected at most one CONFIG.yaml, got {positional}")
    layers = []
    if default_file is not None:
        layers.append(load_yaml(default_file))
    if positional:
        layers.append(load_yaml(positional[0]))
    layers.append(overrides)
    return build_config(cls, *layers)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A nested plain-dict view of a config (tuples become lists) for YAML/JSON output."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        return value

    return convert(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML; reading it back with `parse_config` gives the same config."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + "|".join(map(str, args))
    if origin in (list, tuple):
        return f"list of {_type_name(args[0]) if args else 'str'}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    return getattr(tp, "__name__", str(tp))


def render_help(cfg: Any, prefix: str = "") -> str:
    """Every key of a config: `--section.key=VALUE  (type, default)` and its docstring, one block each."""
    lines = []
    for name, tp in _field_types(type(cfg)).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(tp):
            lines.append(render_help(value, f"{prefix}{name}."))
            continue
        default = to_dict(value) if isinstance(value, tuple) else value
        lines.append(f"  --{prefix}{name}  ({_type_name(tp)}, default {default!r})")
        lines.append(f"      {field_docs(type(cfg)).get(name, '')}")
    return "\n".join(lines)
