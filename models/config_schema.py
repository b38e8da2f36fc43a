"""The one mechanism behind every configuration dataclass (models, pipeline, experiments,
simulator): pydantic v2 dataclasses that reject unknown keys and validate types and ranges.

A configuration class is declared with :func:`config_dataclass`; field types and ranges live on
the fields (``Annotated[int, Ge(1)]``, ``Literal[...]``), cross-field rules in a
``pydantic.model_validator``. The classes stay standard dataclasses (``dataclasses.fields``,
``replace`` and ``asdict`` work; frozen ones hash), and every failure is a :class:`ConfigError`
(a ``ValueError``) whose lines name the full field path, e.g.
``training.loss.tau: must be > 0, got -1``.

External input (JSON files, ``--set`` overrides, TFX ``custom_config``) goes through
:func:`build`: scalars are checked strictly (``"10"`` is not an int, ``1`` is not a bool), JSON
arrays become tuples, nested objects become nested configurations, and a free-form section
validated by another class (``field(metadata=section(LossConfig))``) is checked against it under
its own path while it stays a plain dict.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
import pydantic.dataclasses

_T = TypeVar("_T")

# strict: no silent coercion ("10" -> 10, 1 -> True); extra="forbid": a typo is an error, never a
# silent fallback to a default.
CONFIG = pydantic.ConfigDict(extra="forbid", strict=True)

_SECTION = "lcron_section"


class ConfigError(ValueError):
    """A configuration value or key was rejected.

    Attributes:
      errors: (path, message) pairs, paths relative to ``root``.
      root: where the configuration sits (``training.loss``; "" at the top).
      owner: the class name, shown for an error of the whole object at the top.
    """

    def __init__(self, errors: list[tuple[str, str]], root: str = "", owner: str = ""):
        self.errors, self.root, self.owner = errors, root, owner
        super().__init__(
            "; ".join(f"{_join(root, path) or owner or 'config'}: {msg}" for path, msg in errors)
        )


def config_dataclass(cls: type[_T] | None = None, /, *, frozen: bool = True) -> Any:
    """Declares a configuration class: a pydantic dataclass with :data:`CONFIG` whose
    constructor raises :class:`ConfigError` naming ``ClassName.field``."""

    def wrap(cls: type[_T]) -> type[_T]:
        built = pydantic.dataclasses.dataclass(frozen=frozen, config=CONFIG)(cls)
        init = built.__init__

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            try:
                init(self, *args, **kwargs)
            except pydantic.ValidationError as err:
                raise ConfigError(_errors(err, built), built.__name__) from None

        built.__init__ = __init__  # type: ignore[method-assign]
        return built

    return wrap if cls is None else wrap(cls)


def section(cls: type) -> dict[str, Any]:
    """``dataclasses.field`` metadata of a dict field holding ``cls``'s fields (a sparse
    section handed on as a dict, e.g. the Trainer's ``custom_config``)."""
    return {_SECTION: cls}


def section_class(field: dataclasses.Field) -> type | None:
    return field.metadata.get(_SECTION)


def check_section(cls: type, values: Mapping[str, Any] | None, where: str) -> None:
    """Validates a sparse section dict against ``cls``; errors are named under ``where``."""
    build(cls, values, where)


def build(cls: type[_T], values: Mapping[str, Any] | None, where: str = "") -> _T:
    """``cls`` from external (JSON-like) values.

    Lists become tuples, dicts of a nested configuration become that configuration, a dict given
    for a dict field with a default merges into that default (given keys win), and a section
    (``section(...)`` metadata) is validated against its class. Errors name ``where.field``.

    Raises:
      ConfigError: unknown key, wrong type or out-of-range value, naming its full path.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError([("", f"must be an object, got {values!r}")], where, cls.__name__)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ConfigError([("", _unknown(unknown, fields))], where, cls.__name__)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        field = fields[name]
        path = _join(where, name)
        annotation = cls.__pydantic_fields__[name].annotation  # type: ignore[attr-defined]
        kwargs[name] = _convert(annotation, field, value, path)
    try:
        return cls(**kwargs)
    except ConfigError as err:  # named ``ClassName.field`` by the constructor: re-root
        raise ConfigError(err.errors, where, cls.__name__) from None


def _convert(annotation: Any, field: dataclasses.Field, value: Any, path: str) -> Any:
    nested = _dataclass_in(annotation)
    if nested is not None and isinstance(value, Mapping):
        return build(nested, value, path)
    if nested is not None and not isinstance(value, nested) and value is not None:
        raise ConfigError([("", f"must be an object, got {value!r}")], path)
    item = _tuple_item_dataclass(annotation)
    if item is not None and isinstance(value, list | tuple):
        return tuple(
            build(item, v, f"{path}[{i}]") if isinstance(v, Mapping) else v
            for i, v in enumerate(value)
        )
    if isinstance(value, Mapping) and field.default_factory is not dataclasses.MISSING:
        value = {**field.default_factory(), **value}
    if isinstance(value, Mapping) and section_class(field) is not None:
        check_section(section_class(field), value, path)
        return dict(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _dataclass_in(annotation: Any) -> type | None:
    """The configuration class in ``annotation`` (``X`` or ``X | None``), if any."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for c in candidates:
        if isinstance(c, type) and dataclasses.is_dataclass(c):
            return c
    return None


def _tuple_item_dataclass(annotation: Any) -> type | None:
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for c in candidates:
        if typing.get_origin(c) is tuple:
            args = typing.get_args(c)
            if args and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
                return args[0]
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def is_text_field(cls: type, dotted: str) -> bool:
    """Whether ``dotted`` names a text field of ``cls`` (through nested configurations and
    sections): a ``--set`` value for it is kept as typed, not parsed as JSON."""
    node: Any = cls
    keys = dotted.split(".")
    for i, key in enumerate(keys):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return False
        fields = {f.name: f for f in dataclasses.fields(node)}
        if key not in fields:
            return False
        annotation = node.__pydantic_fields__[key].annotation  # type: ignore[attr-defined]
        if i == len(keys) - 1:
            options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
            return any(o is str or typing.get_origin(o) is typing.Literal for o in options)
        node = section_class(fields[key]) or _dataclass_in(annotation)
    return False


def _unknown(keys: list[str], fields: Mapping[str, Any]) -> str:
    names = ", ".join(repr(k) for k in keys)
    return f"unknown field {names}; known: {', '.join(fields)}"


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out = _join(out, f"[{part}]" if isinstance(part, int) else str(part))
    return out


_TYPE_NAMES = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "dict_type": "an object",
}

_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _message(error: Mapping[str, Any]) -> str:
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        bound = ctx[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound}, got {got!r}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s), got {got!r}"
    if kind == "literal_error":
        return f"unknown value {got!r}; known: {ctx['expected']}"
    if kind == "tuple_type" and isinstance(got, list):
        return f"must be a tuple (from_dict takes a list), got {got!r}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, got {got!r}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind == "missing_argument" or kind == "missing":
        return "required"
    return f"{error['msg']}, got {got!r}"


def _errors(err: pydantic.ValidationError, cls: type) -> list[tuple[str, str]]:
    """pydantic's errors as (field path, message) pairs; unknown keys as one error naming them
    with the known fields."""
    errors = [(_loc(tuple(e["loc"])), _message(e)) for e in err.errors() if e["type"] not in _EXTRA]
    extra = [str(e["loc"][-1]) for e in err.errors() if e["type"] in _EXTRA]
    if extra:
        fields = [f.name for f in dataclasses.fields(cls)]
        errors.insert(0, ("", _unknown(extra, dict.fromkeys(fields))))
    return errors


_EXTRA = ("unexpected_keyword_argument", "extra_forbidden")


def to_dict(config: Any) -> dict[str, Any]:
    """The configuration as plain JSON-able values (tuples stay tuples; ``json`` writes lists)."""
    return dataclasses.asdict(config)


def effective_dict(config: Any, bare_sections: bool = False) -> dict[str, Any]:
    """``to_dict`` with every section completed with its class's defaults (what the consumer
    of the section will use); ``bare_sections``: the sections' class defaults alone."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        cls = section_class(field)
        if cls is not None and isinstance(value, Mapping):
            out[field.name] = to_dict(cls() if bare_sections else build(cls, value, field.name))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[field.name] = effective_dict(value, bare_sections)
        else:
            out[field.name] = copy.deepcopy(value)
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; empty objects stay as leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = _join(prefix, str(key))
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out
