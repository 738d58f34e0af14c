"""Strict conversion of plain YAML data into typed, frozen dataclasses."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option, declared with it: ``Annotated[float, Range(0)]``.

    ``low`` and ``high`` are inclusive bounds (None: unbounded); ``above`` makes the low bound
    exclusive (``Range(0, above=True)``: positive). The loader checks it as it converts.
    """

    low: float | None = None
    high: float | None = None
    above: bool = False

    def check(self, value: float, key: str) -> None:
        """Raise ConfigError naming ``key`` if ``value`` is outside the range."""
        too_low = self.low is not None and (value <= self.low if self.above else value < self.low)
        if too_low or (self.high is not None and value > self.high):
            raise ConfigError(f"{key}: {value!r} {self.describe()}")

    def describe(self) -> str:
        """The rule in words, e.g. ``must be positive``."""
        if self.above and self.low == 0 and self.high is None:
            return "must be positive"
        if self.low == 0 and self.high is None:
            return "must not be negative"
        if self.high is None:
            return f"must be {'above' if self.above else 'at least'} {self.low:g}"
        if self.low is None:
            return f"must be at most {self.high:g}"
        opening = "(" if self.above else "["
        return f"must be within {opening}{self.low:g}, {self.high:g}]"


POSITIVE = Range(0, above=True)
NON_NEGATIVE = Range(0)
UNIT_INTERVAL = Range(0, 1)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _number(value: Any, key: str) -> float:
    """A finite float from a number or a numeric string (YAML 1.1 reads ``1e-2`` as a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return number


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Annotated:
        converted = _convert(value, args[0], key)
        for rule in args[1:]:
            if isinstance(rule, Range):
                rule.check(converted, key)
        return converted
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {args}"
        )
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if origin in (dict, typing.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        key_tp, val_tp = args or (Any, Any)
        return {
            _convert(k, key_tp, f"{key}.{k}"): _convert(v, val_tp, f"{key}.{k}")
            for k, v in value.items()
        }
    if origin in (tuple,):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        return _number(value, key)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def from_mapping(cls: type[T], data: Any, key: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (allowed: {', '.join(sorted(fields))})")
    values = {}
    for name, field in fields.items():
        child = f"{key}.{name}" if key else name
        if name in data:
            values[name] = _convert(data[name], hints[name], child)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {child}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{key}.{err}" if key else str(err)) from None


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping, with errors that name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    return parse_yaml_mapping(text, str(path))


def parse_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse YAML text that must hold a mapping; errors name ``source``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    return data
