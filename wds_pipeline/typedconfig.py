"""Mappings (YAML, ``--set`` overrides) into typed, frozen dataclasses, with errors that name
the key and the file.

``from_mapping(Cls, {"lr": "1e-3"}, where="configs/x.yaml: optim")`` checks every key
against ``Cls``'s fields and every value against the field's annotation (``int``,
``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[T, ...]``,
``dict``, a nested dataclass, and ``Annotated[T, FromText(...)]`` for a value that may be
written as text, e.g. a byte size "60GB"). Range checks belong in each class's
``__post_init__``; their ``ValueError`` is re-raised with ``where`` in front.

:func:`check_options` is such a ``__post_init__``: ``Literal`` choices and the lower
bounds declared with :func:`at_least` are checked from the fields themselves, so an
option's type, default and range are declared once, in its field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")


class OptionValueError(ConfigError):
    """A value outside its option's declared choices or bounds (see :func:`check_options`);
    :func:`from_mapping` names it by its dotted key (``loader.batch_size``)."""

    def __init__(self, field: str, detail: str) -> None:
        self.field, self.detail = field, detail
        super().__init__(f"{field}{detail}")


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {_show(data)}")
    hints = type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(names)}")
    values = {k: convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except OptionValueError as e:
        raise ConfigError(f"{where}.{e.field}{e.detail}") from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` as type ``tp``, or a ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, where)
            except ConfigError as e:
                errors.append(str(e).removeprefix(f"{where}: "))
        raise ConfigError(f"{where}: {'; or '.join(errors)}")
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        text = next((m for m in meta if isinstance(m, FromText)), None)
        if text is not None and isinstance(value, str):
            try:
                return text.parse(value)
            except ValueError:
                raise ConfigError(f"{where}: expected {text.what}, got {_show(value)}") from None
        return convert(base, value, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise ConfigError(f"{where}: expected one of {list(choices)}, got {_show(value)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = args[0] if args else Any
        return tuple(convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)  # type: ignore[arg-type]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    raise ConfigError(f"{where}: unsupported option type {tp!r}")


@dataclasses.dataclass(frozen=True)
class FromText:
    """``Annotated`` metadata: the option may also be given as text, read with ``parse``
    (``what`` describes the text in errors, e.g. "a size such as 60GB")."""

    parse: Callable[[str], Any]
    what: str


def from_text(tp: Any, value: Any) -> Any:
    """``value`` read with the :class:`FromText` of ``tp`` (or of one member of a union ``tp``)
    when it is text that ``tp`` reads; else ``value`` unchanged. For Python callers, who skip
    :func:`convert`: the same parser as a YAML value."""
    if not isinstance(value, str):
        return value
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) is Annotated:
            text = next((m for m in t.__metadata__ if isinstance(m, FromText)), None)
            if text is not None:
                return text.parse(value)
    return value


def at_least(low: float, default: T) -> T:
    """A dataclass field with this default whose value, when not None, must be >= ``low``
    (checked by :func:`check_options`)."""
    return dataclasses.field(default=default, metadata={"at_least": low})


def check_options(obj: Any) -> None:
    """A frozen options dataclass's ``__post_init__``: sequences become tuples, and every
    ``Literal`` choice and :func:`at_least` bound is checked; an :class:`OptionValueError`
    (a ``ValueError``) names the field."""
    cls = type(obj)
    hints = type_hints(cls, extras=False)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            value = tuple(value)
            object.__setattr__(obj, f.name, value)  # frozen: the one normalisation it makes
        choices = literal_choices(hints[f.name])
        if choices is not None and value not in choices:
            raise OptionValueError(f.name, f"={value!r} is not one of {choices}")
        item_choices = _item_choices(hints[f.name])
        if item_choices is not None and isinstance(value, tuple):
            bad = [v for v in value if v not in item_choices]
            if bad:
                raise OptionValueError(f.name, f": {bad[0]!r} is not one of {item_choices}")
        low = f.metadata.get("at_least")
        if low is not None and value is not None and value < low:
            raise OptionValueError(f.name, f" must be >= {low}, got {value}")


def literal_choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) option, else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    args = typing.get_args(hint)
    literals = [a for a in args if typing.get_origin(a) is Literal]
    if len(literals) == 1 and all(a is type(None) or a in literals for a in args):
        return typing.get_args(literals[0]) + (None,)
    return None  # e.g. cache_dir: str | Literal[False] | None takes any path


def _item_choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed items of a ``tuple[Literal[...], ...]`` option, else None."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if args and typing.get_origin(args[0]) is Literal:
            return typing.get_args(args[0])
    return None


_HINTS: dict[tuple[Any, bool], types.MappingProxyType[str, Any]] = {}


def type_hints(cls: Any, extras: bool = True) -> types.MappingProxyType[str, Any]:
    """``typing.get_type_hints`` of an options class, resolved once per class: it compiles
    every string annotation each call (~2 ms of the ~6 ms a ``StreamingLoader`` took to
    build, whose options are checked in several dataclasses' ``__post_init__``)."""
    hints = _HINTS.get((cls, extras))
    if hints is None:
        hints = _HINTS[(cls, extras)] = types.MappingProxyType(typing.get_type_hints(cls, include_extras=extras))
    return hints


def to_mapping(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists, e.g. to store in a checkpoint."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_mapping(v) for k, v in obj.items()}
    return obj


def set_dotted(doc: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set a.b=value`` to a nested mapping; the value is read as YAML."""
    import yaml

    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set optim.lr=0.001")
    parts = key.strip().split(".")
    node = doc
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {p!r} is not a block of options")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
