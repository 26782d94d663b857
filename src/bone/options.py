"""Typed dataclass configs: read from YAML and command-line overrides, validated, documented.

    cfg = load(TrainConfig, "configs/demo.yaml", ["bone.r=16", "--optim.lr", "3e-4"])
    print(render_yaml(cfg))        # commented, loadable YAML (`bone train --print-config`)
    print(render_yaml(TrainConfig))  # the defaults, without building the config (`--help`)

Any dataclass works; nested dataclass fields are sections. Field types: bool, int, float, str,
None, unions of them, `list[T]` and `dict[str, T]` (a mapping whose entries a dotted key sets one
at a time: `lrs.col=[1e-4,3e-4]`). Values come from YAML (typed by the parser) or the command
line (`key=value`, `--key value`, strings typed by the field's annotation). The trailing `# comment` of each field is its documentation. Every error is a
`ConfigError` naming the dotted key and the expected type, with the nearest known key for typos.
Importing this module does not import torch (`--help` stays fast).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

to_dict = dataclasses.asdict


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _args(tp) -> tuple:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def describe(tp) -> str:
    """'float or null', 'list of str or str or null', ..."""
    names = []
    for a in _args(tp):
        if a is type(None):
            names.append("null")
        elif typing.get_origin(a) is list:
            names.append(f"list of {describe(typing.get_args(a)[0])}")
        elif typing.get_origin(a) is dict:
            names.append(f"mapping of str to {describe(typing.get_args(a)[1])}")
        else:
            names.append(getattr(a, "__name__", str(a)))
    return " or ".join(names)


def _check_one(value, tp):
    """value converted to tp, or raise TypeError."""
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_check_one(v, item) for v in value]
    elif typing.get_origin(tp) is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            item = typing.get_args(tp)[1]
            return {k: _check_one(v, item) for k, v in value.items()}
    raise TypeError


def check_value(value, tp, key: str):
    """Validate a parsed value against a field annotation (unions tried in order)."""
    for a in _args(tp):
        try:
            return _check_one(value, a)
        except TypeError:
            continue
    raise ConfigError(f"config key {key!r}: expected {describe(tp)}, got {value!r} ({type(value).__name__})")


def parse_cli_value(raw: str, tp, key: str):
    """Type a command-line string by the field's annotation, trying null, bool, int, float, [list], str in that order."""
    rank = {type(None): 0, bool: 1, int: 2, float: 3, str: 5}
    for a in sorted(_args(tp), key=lambda a: rank.get(a, 4)):
        low = raw.strip().lower()
        if a is type(None) and low in ("null", "none", "~"):
            return None
        if a is bool and low in ("true", "false", "yes", "no", "1", "0"):
            return low in ("true", "yes", "1")
        if a in (int, float):
            try:
                return a(raw)
            except ValueError:
                continue
        if typing.get_origin(a) in (list, dict):
            opener = "[" if typing.get_origin(a) is list else "{"
            parsed = yaml.safe_load(raw) if raw.strip().startswith(opener) else None
            if isinstance(parsed, typing.get_origin(a)):
                return check_value(parsed, a, key)
        if a is str:
            return raw
    raise ConfigError(f"config key {key!r}: expected {describe(tp)}, got {raw!r}")


def _unknown(key: str, known) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; known keys here: {sorted(known)}")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a nested dict, validating keys and types recursively. A value the
    dataclass itself refuses (its `__post_init__` raising ValueError) becomes a ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<top>'!r} must be a mapping, got {data!r}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown(prefix + str(key), hints)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, prefix + key + ".")
        else:
            kwargs[key] = check_value(value, tp, prefix + key)
    try:
        return cls(**kwargs)
    except ValueError as e:  # named by the section unless the message names its key already
        raise ConfigError(str(e) if prefix and str(e).startswith(prefix) else f"{prefix.rstrip('.') or 'config'}: {e}") from None


def parse_overrides(args: list[str]) -> list[tuple[str, str | None]]:
    """['a.b=1', '--c.d', '2', '--e=3', '--f'] -> [('a.b', '1'), ('c.d', '2'), ('e', '3'), ('f', None)]
    (None: no value followed; `apply_overrides` says whether the key is unknown or needs one)."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            body = a[2:]
            if "=" in body:
                k, v = body.split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                k, v = body, args[i + 1]
                i += 1
            else:
                k, v = body, None
            out.append((k.replace("-", "_"), v))
        elif "=" in a:
            k, v = a.split("=", 1)
            out.append((k, v))
        else:
            raise ConfigError(f"cannot read argument {a!r}: use section.key=value or --section.key value")
        i += 1
    return out


def _is_mapping(tp) -> bool:
    return any(typing.get_origin(a) is dict for a in _args(tp))


def _mapping_item(tp):
    """The value type of the (first) mapping in annotation `tp`."""
    return next(typing.get_args(a)[1] for a in _args(tp) if typing.get_origin(a) is dict)


def apply_overrides(obj, overrides: list[tuple[str, str | None]]):
    """A new validated config of obj's type with dotted-key string overrides applied."""
    cls = type(obj)
    data = to_dict(obj)
    for key, raw in overrides:
        node_cls, node, parts = cls, data, key.split(".")
        for depth, part in enumerate(parts):
            hints = _hints(node_cls)
            if part not in hints:
                raise _unknown(".".join(parts[: depth + 1]), hints)
            tp = hints[part]
            last = depth == len(parts) - 1
            if _is_mapping(tp) and depth == len(parts) - 2:  # one entry of a mapping: section.field.entry=value
                entry = parts[-1]
                node[part] = {**(node[part] or {}), entry: parse_cli_value(raw, _mapping_item(tp), key)}
                break
            if dataclasses.is_dataclass(tp):
                if last:
                    raise ConfigError(f"{key!r} is a section; set one of its keys: {sorted(_hints(tp))}")
                node_cls, node = tp, node[part]
            elif not last:
                raise ConfigError(f"{'.'.join(parts[: depth + 1])!r} is a value, not a section; cannot set {key!r}")
            elif raw is None:
                raise ConfigError(f"option --{key} needs a value: --{key} VALUE or {key}=VALUE")
            else:
                node[part] = parse_cli_value(raw, tp, key)
    return from_dict(cls, data)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML config file (empty file: {})."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found (pass a YAML file such as configs/demo.yaml)")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:  # one line: PyYAML's message spans several, with a copy of the text
        mark = getattr(e, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        what = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {what}") from None


def load(cls, path: str | Path | None = None, overrides: list[str] = ()):
    """Dataclass `cls` from an optional YAML file, then command-line overrides (`parse_overrides` forms)."""
    data = read_yaml(path) if path is not None else {}
    return apply_overrides(from_dict(cls, data), parse_overrides(list(overrides)))


@lru_cache(maxsize=None)
def field_comments(cls) -> dict[str, str]:
    """The trailing `# comment` of each field line in the dataclass source."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _scalar(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _values(obj) -> list[tuple[str, Any]]:
    """(field name, value) of a dataclass instance; of a dataclass class, its defaults, with
    dataclass-valued defaults left as their class (nothing is constructed or validated)."""
    if not isinstance(obj, type):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    out = []
    for f in dataclasses.fields(obj):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif dataclasses.is_dataclass(f.default_factory):
            value = f.default_factory
        else:
            value = f.default_factory()
        out.append((f.name, value))
    return out


def render_yaml(obj, indent: int = 0) -> str:
    """A config (instance) or a dataclass's defaults (class) as YAML with each field's type and
    comment: a documented, loadable template."""
    cls = obj if isinstance(obj, type) else type(obj)
    lines, pad = [], "  " * indent
    comments, hints = field_comments(cls), _hints(cls)
    for name, value in _values(obj):
        note = comments.get(name, "")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{name}:  # {note}")
            lines.append(render_yaml(value, indent + 1))
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}  # ({describe(hints[name])}) {note}")
    return "\n".join(lines)
