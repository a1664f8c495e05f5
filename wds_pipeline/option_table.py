"""Options declared once: a frozen dataclass per command, its fields' help and flags in
field metadata, and from it the argparse flags, ``--help`` and the YAML keys of ``--config``.

Declare a field with :func:`option` (or :func:`switch` for an off-by-default flag)::

    @dataclass(frozen=True)
    class Options:
        codec: Literal["npy", "flac"] = option("npy", help="audio field", group="preprocessing")
        shuffle_seed: int | None = option(0, help="shuffle seed", presets=(
            Preset("--no-shuffle", None, "keep inputs in id order"),))

and :class:`OptionTable` generates the rest: the flag ``--codec {npy,flac}`` (``Literal``
gives the choices, ``int``/``float``/``str`` the type, a ``bool`` gives ``--x/--no-x``), a
help line with the default, and the YAML key ``codec`` (or ``codec`` spelled ``codec``;
``-`` and ``_`` are the same in keys). A :class:`Preset` is an extra flag, and YAML key,
that sets the field to a fixed value (``--no-shuffle``, ``no_shuffle: true``). A field with
no metadata still gets a flag (``--field-name``), so a new field is on the command line as
soon as it is declared; :func:`internal` keeps one off it (API only).

The same declaration says how a value is *recorded* with what it produced (a build's
fingerprint and index): :func:`recorded` gives the fields declared ``fingerprint=True``
(the default: only how-to-run settings, such as a number of workers, opt out), a field
whose ``unused_when`` holds recorded as None, and an ``omit_default`` field left out while
at its default (an option added later: outputs made before it keep their record).
:func:`choices` reads a field's allowed values from its ``Literal`` type.

A default may depend on another option's value (``build sessions --mode words`` keeps
words shorter than the build-wide ``--min-duration``): the deciding field declares it,
``option("segments", ..., sets_defaults={"words": {"min_duration": 0.05}})``, and the
table gives ``min_duration`` that default when ``mode`` is ``words`` and neither a flag nor
a YAML key set ``min_duration``; ``--help`` shows both defaults. The value chosen is the
field's value like any other, so it is recorded (and fingerprinted) as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

from .typedconfig import ConfigError, convert, type_hints

T = TypeVar("T")

_AUTO = "<auto>"  # OptionSpec.flag: "--" + the field name with '-' for '_'
_KEY = "option"  # the field-metadata key holding an OptionSpec (None: internal)
_RECORD = "recorded"  # the field-metadata key holding a Record


@dataclasses.dataclass(frozen=True)
class Preset:
    """An extra flag that sets its field to ``value`` (also a YAML key taking true/false)."""

    flag: str
    value: Any
    help: str


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    help: str = ""
    flag: str | None = _AUTO  # None: no flag taking a value (only presets)
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # text -> value, e.g. a size such as 512MB
    group: str | None = None  # --help section
    presets: tuple[Preset, ...] = ()
    toggle: bool = True  # bool fields: --x/--no-x (True) or only --x, setting True (False)
    # (value of this field, another field, that field's default while this one has the value)
    sets_defaults: tuple[tuple[Any, str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Record:
    """How a field's value is recorded (see :func:`recorded`)."""

    fingerprint: bool = True  # False: how to run, never what is produced
    unused_when: Callable[[Any], bool] | None = None  # given the instance: recorded as None
    omit_default: bool = False  # left out while at its default


def option(default: T, *, help: str, flag: str | None = _AUTO, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, group: str | None = None,
           presets: Sequence[Preset] = (), toggle: bool = True, fingerprint: bool = True,
           unused_when: Callable[[Any], bool] | None = None,
           omit_default: bool = False,
           sets_defaults: Mapping[Any, Mapping[str, Any]] | None = None) -> T:
    """A dataclass field with ``default`` that is a command-line option and a YAML key.
    ``fingerprint``, ``unused_when``, ``omit_default``: how :func:`recorded` records it.
    ``sets_defaults``: ``{value: {other field: its default while this field has value}}``
    (fields of this class or of another class of the same :class:`OptionTable`)."""
    implied = tuple((value, name, default) for value, named in (sets_defaults or {}).items()
                    for name, default in named.items())
    spec = OptionSpec(help=help, flag=flag, metavar=metavar, parse=parse, group=group,
                      presets=tuple(presets), toggle=toggle, sets_defaults=implied)
    record = Record(fingerprint, unused_when, omit_default)
    return dataclasses.field(default=default, metadata={_KEY: spec, _RECORD: record})


def switch(*, help: str, group: str | None = None, fingerprint: bool = True) -> bool:
    """A ``bool`` field, default False, set by one flag (``--overwrite``; no ``--no-...``)."""
    return option(False, help=help, group=group, toggle=False, fingerprint=fingerprint)


def internal(default_factory: Callable[[], T], *, fingerprint: bool = True) -> T:
    """A dataclass field that is no command-line option or YAML key (API only)."""
    return dataclasses.field(default_factory=default_factory,
                             metadata={_KEY: None, _RECORD: Record(fingerprint)},
                             hash=False, compare=False)


def recorded(obj: Any, group: str | None = None) -> dict[str, Any]:
    """The fields of ``obj`` (of its --help section ``group`` when given) that enter its
    record, by name: every field declared ``fingerprint=True``, as None where its
    ``unused_when`` holds, and without an ``omit_default`` field at its default."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        record: Record = f.metadata.get(_RECORD, Record())
        spec = f.metadata.get(_KEY)
        if not record.fingerprint or (group is not None and
                                      (spec is None or spec.group != group)):
            continue
        value = getattr(obj, f.name)
        if record.omit_default and value == f.default:
            continue
        out[f.name] = None if record.unused_when and record.unused_when(obj) else value
    return out


def implied_defaults(cls: type, chosen: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults the fields of ``cls`` set for other fields (``sets_defaults``), given the
    values ``chosen`` (a field not in it: its own default)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        for value, name, default in spec.sets_defaults if spec else ():
            if chosen.get(f.name, f.default) == value:
                out[name] = default
    return out


def choices(cls: type, name: str) -> tuple[Any, ...] | None:
    """The values field ``name`` of ``cls`` allows, from its ``Literal`` type (None
    included when the type is ``Literal[...] | None``); None when it is no ``Literal``."""
    tp = type_hints(cls, extras=False)[name]
    allowed = _strip_none(tp)
    if len(allowed) != 1 or typing.get_origin(allowed[0]) is not Literal:
        return None
    values = typing.get_args(allowed[0])
    return values + (None,) if len(allowed) < len(_all_args(tp)) else values


def _all_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def values(obj: Any) -> dict[str, Any]:
    """The fields of an options instance as a dict (shallow: values are kept as they are)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@dataclasses.dataclass(frozen=True)
class _Option:
    cls: type
    field: str
    annotation: Any  # the field's type, ``X | None`` kept
    spec: OptionSpec
    default: Any


def _specs(cls: type) -> list[_Option]:
    hints = type_hints(cls, extras=False)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        spec = f.metadata.get(_KEY, OptionSpec())
        if spec is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(_Option(cls, f.name, hints[f.name], spec, default))
    return out


def _strip_none(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _text_parser(opt: _Option) -> tuple[Callable[[str], Any], list[Any] | None]:
    """How the command line reads the option's text, and its choices (``Literal``)."""
    if opt.spec.parse is not None:
        parse = opt.spec.parse

        def checked(text: str) -> Any:
            try:
                return parse(text)
            except ValueError as e:  # argparse would print only "invalid value"
                raise argparse.ArgumentTypeError(str(e)) from None

        return checked, None
    tp = _strip_none(opt.annotation)[0]  # a union such as str | tuple[str, ...]: its first
    if typing.get_origin(tp) is Literal:
        choices = list(typing.get_args(tp))
        return type(choices[0]), choices
    if tp in (int, float, str):
        return tp, None
    raise TypeError(f"{opt.cls.__name__}.{opt.field}: no command-line reading for {tp!r}; "
                    "give it parse=... in option(...) or declare it internal()")


def _help(opt: _Option, default: Any, also: Sequence[str] = ()) -> str:
    """The help line: the declared text, ``default`` (the field's, or the command's own),
    and ``also`` (defaults other options set: "0.05 with --mode words")."""
    text = opt.spec.help
    shown = default
    if isinstance(shown, bool) and not opt.spec.toggle:
        shown = None  # a switch: off unless given
    if "default" not in text and shown is not None and shown is not False:
        shown = "; ".join((str(shown), *also))
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return text.replace("%", "%%")


def _flag(o: _Option) -> str:
    return o.spec.flag if o.spec.flag not in (_AUTO, None) else "--" + o.field.replace("_", "-")


class OptionTable:
    """The command-line flags and YAML keys of one command, generated from its dataclasses.

    Several classes may share a command (``build``: the build options and the source's);
    a flag or key declared twice is an error at construction. ``group`` names the ``--help``
    section of fields that name none.
    """

    def __init__(self, *classes: tuple[type, str | None], defaults: Mapping[str, Any] | None = None):
        self.classes = [cls for cls, _ in classes]
        self._default_group = {cls: group for cls, group in classes}
        self._options = [o for cls in self.classes for o in _specs(cls)]
        self._keys: dict[str, tuple[_Option, Preset | None]] = {}
        dests: dict[str, _Option] = {}
        for o in self._options:
            if o.field in dests:
                raise TypeError(f"option {o.field!r} declared by both "
                                f"{dests[o.field].cls.__name__} and {o.cls.__name__}")
            dests[o.field] = o
            flags: list[tuple[str, Preset | None]] = [(p.flag, p) for p in o.spec.presets]
            if o.spec.flag is not None:
                flags.insert(0, (_flag(o), None))
            for flag, preset in flags:
                if _key(flag) in self._keys:
                    raise TypeError(f"flag {flag} declared twice ({o.cls.__name__}.{o.field})")
                self._keys[_key(flag)] = (o, preset)
        # Fields whose default this command changes (``build rirs``: --min-duration 0).
        self._defaults = dict(defaults or {})
        unknown = sorted(set(self._defaults) - set(dests))
        if unknown:
            raise TypeError(f"defaults for fields no class of this command declares: {unknown}")
        # --help of a field whose default another option's value changes: both defaults.
        self._also: dict[str, list[str]] = {}
        for o in self._options:
            for value, name, default in o.spec.sets_defaults:
                if name in dests:
                    self._also.setdefault(name, []).append(f"{default} with {_flag(o)} {value}")

    def keys(self) -> list[str]:
        """The YAML keys, which are the flags without ``--``, with ``_`` for ``-``."""
        return sorted(self._keys)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add every flag; none has a default in the namespace (``SUPPRESS``), so
        :meth:`build` can tell a flag given on the command line from a YAML value."""
        groups: dict[str, Any] = {}
        for key, (o, preset) in self._keys.items():
            title = o.spec.group or self._default_group[o.cls]
            target: Any = parser
            if title:
                if title not in groups:
                    groups[title] = parser.add_argument_group(title)
                target = groups[title]
            kw: dict[str, Any] = dict(dest=o.field, default=argparse.SUPPRESS)
            flag = "--" + key.replace("_", "-") if preset is None else preset.flag
            if preset is not None:
                target.add_argument(flag, action="store_const", const=preset.value,
                                    help=preset.help.replace("%", "%%"), **kw)
            elif _strip_none(o.annotation) == (bool,):
                action = argparse.BooleanOptionalAction if o.spec.toggle else "store_true"
                target.add_argument(flag, action=action, help=self._help(o), **kw)
            else:
                parse, choices = _text_parser(o)
                target.add_argument(flag, type=parse, choices=choices, metavar=o.spec.metavar,
                                    help=self._help(o), **kw)

    def _help(self, o: _Option) -> str:
        return _help(o, self._defaults.get(o.field, o.default), self._also.get(o.field, ()))

    def build(self, args: argparse.Namespace, config: Mapping[str, Any] | None = None,
              where: str = "--config") -> list[Any]:
        """One instance per class: defaults, then ``config`` (YAML keys), then the flags given.

        Raises :class:`ConfigError` naming ``where`` and the key for an unknown key or a
        value of the wrong type, and naming the flag for a value the class refuses.
        """
        config = {str(k).replace("-", "_"): v for k, v in (config or {}).items()}
        unknown = sorted(set(config) - set(self._keys))
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {unknown}; valid: {self.keys()}")
        chosen: dict[str, Any] = {}
        for key, value in config.items():
            o, preset = self._keys[key]
            if preset is not None:
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: {key}: expected true or false, got {value!r}")
                if value:
                    chosen[o.field] = preset.value
            else:
                chosen[o.field] = self._yaml_value(o, value, f"{where}: {key}")
        given = vars(args)
        for o in self._options:
            if o.field in given:
                chosen[o.field] = given[o.field]
        for cls in self.classes:  # defaults set by other options' values; given values win
            implied = implied_defaults(cls, chosen)
            chosen.update({k: v for k, v in implied.items() if k not in chosen})
        chosen.update({k: v for k, v in self._defaults.items() if k not in chosen})
        out = []
        for cls in self.classes:
            kwargs = {o.field: chosen[o.field] for o in self._options
                      if o.cls is cls and o.field in chosen}
            try:
                out.append(cls(**kwargs))
            except (TypeError, ValueError) as e:
                raise ConfigError(str(e)) from None
        return out

    @staticmethod
    def _yaml_value(o: _Option, value: Any, where: str) -> Any:
        if isinstance(value, str) and _strip_none(o.annotation) != (bool,):
            # Text is read as on the command line: sizes such as 512MB, numbers such as 1e-3.
            parse, choices = _text_parser(o)
            try:
                result = parse(value)
            except (ValueError, argparse.ArgumentTypeError) as e:
                raise ConfigError(f"{where}: {e}") from None
            if choices is not None and result not in choices:
                raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
            return result
        return convert(o.annotation, value, where)
