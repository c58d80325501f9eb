"""Typed pipeline constants: the frozen dataclasses that a bundle's ``manifest.json`` carries as ``pipeline``.

Each family declares its constants in ``runtime/<family>/constants.py`` as subclasses of
:class:`Constants`. Export builds them and writes ``to_dict()`` into the manifest; the runtime
reads them with ``of(bundle)`` and uses typed attributes. The JSON is the one the manifest has
always held, so bundles written before load as they did.

Reading is strict: a key the dataclass does not know, a required key that is missing, or a value
of the wrong type is refused with its path in the manifest and the bundle, so a renamed key is an
error and never a silent default. Keys that some bundles leave out have their default in the
dataclass.

How a field maps to JSON: by its name, or the key given with :func:`json_key`; a nested
:class:`Constants` is a nested object, or sits in its parent's object when :func:`flattened`;
an :func:`optional` one is left out when None; a tuple is a list; a ``dict[str, ...]`` is an
object (with :func:`by_key`, each value's class is chosen by its key); a ``Literal`` takes only
its values; ``float`` takes JSON integers too.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Literal, Mapping, TypeVar, Union

from runtime.bundle import Bundle, BundleError

C = TypeVar("C", bound="Constants")


def json_key(key: str) -> Any:
    """A field stored under another JSON key than its name (e.g. ``sampler_name`` under ``"name"``)."""
    return dataclasses.field(metadata={"key": key})


def flattened() -> Any:
    """A nested :class:`Constants` whose keys sit in its parent's JSON object rather than a nested one."""
    return dataclasses.field(metadata={"flatten": True})


def optional() -> Any:
    """A nested :class:`Constants` that only some bundles carry: None when its key is absent, left out when None."""
    return dataclasses.field(default=None, metadata={"optional": True})


def by_key(classes: Mapping[str, type]) -> Any:
    """A ``dict[str, Constants]`` whose values' class is chosen by their key; any other key is refused."""
    return dataclasses.field(metadata={"classes": dict(classes)})


class Constants:
    """Base of a family's frozen constants dataclasses: strict ``from_dict``, exact ``to_dict``, ``of(bundle)``."""

    FAMILY: ClassVar[str] = ""  # set on a family's top-level constants: the bundles ``of`` reads

    @classmethod
    def of(cls: type[C], bundle: Bundle) -> C:
        """The bundle's pipeline constants; a bundle of another family is refused."""
        family = bundle.manifest.family
        if not cls.FAMILY or family != cls.FAMILY:
            raise BundleError(f"{bundle.root} is a {family} bundle; {cls.__name__} are the pipeline constants of "
                              f"{cls.FAMILY or 'no family (a nested part)'} bundles")
        return cls.from_dict(bundle.pipeline, f"bundle {bundle.root} ({family} {bundle.manifest.variant}): pipeline")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The JSON keys of this class's object (those of flattened parts included)."""
        hints, found = typing.get_type_hints(cls), []
        for f in dataclasses.fields(cls):
            found += hints[f.name].keys() if f.metadata.get("flatten") else [_key(f)]
        return tuple(found)

    @classmethod
    def from_dict(cls: type[C], data: Any, where: str = "") -> C:
        """Read ``data`` (a manifest's JSON object), refusing unknown, missing and mistyped keys.

        ``where`` names the object in errors (e.g. ``bundle /b (ait tiny-depth): pipeline``).
        """
        where, keys = where or cls.__name__, cls.keys()
        _expect(isinstance(data, Mapping), where, "a JSON object", data)
        unknown = [k for k in data if k not in keys]
        if unknown:
            raise BundleError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; expected the keys {', '.join(keys)}. A renamed "
                              "or misspelt key is refused rather than ignored: export the bundle again with this "
                              "version")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if f.metadata.get("flatten"):
                values[f.name] = kind.from_dict({k: v for k, v in data.items() if k in kind.keys()}, where)
            elif _key(f) in data:
                values[f.name] = _read(kind, data[_key(f)], f"{where}.{_key(f)}", f.metadata.get("classes"))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BundleError(f"{where}: missing key '{_key(f)}' (the keys of {cls.__name__}: "
                                  f"{', '.join(keys)}); export the bundle again with this version")
        try:
            return cls(**values)
        except BundleError as exc:  # a check across fields (``__post_init__``)
            raise BundleError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of these constants, as the manifest holds it."""
        written: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("flatten"):
                written.update(value.to_dict())
            elif value is not None or not f.metadata.get("optional"):
                written[_key(f)] = _write(value)
        return written


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _expect(ok: bool, where: str, expected: str, found: Any) -> None:
    if not ok:
        raise BundleError(f"{where}: expected {expected}, found {type(found).__name__} {found!r}")


def _read(kind: Any, value: Any, where: str, classes: Mapping[str, type] | None = None) -> Any:
    """``value`` checked against the annotation ``kind`` and converted (lists to tuples, objects to Constants)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _read(inner, value, where)
    if origin is Literal:
        _expect(value in args, where, " or ".join(map(repr, args)), value)
        return value
    if isinstance(kind, type) and issubclass(kind, Constants):
        return kind.from_dict(value, where)
    if origin is tuple:
        _expect(isinstance(value, list), where, "a JSON list", value)
        items = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
        _expect(len(items) == len(value), where, f"a list of {len(items)}", value)
        return tuple(_read(k, v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(items, value)))
    if origin is dict:
        _expect(isinstance(value, Mapping), where, "a JSON object", value)
        unknown = [k for k in value if classes is not None and k not in classes]
        if unknown:
            raise BundleError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; expected some of {', '.join(classes)}")
        return {k: _read(classes[k] if classes else args[1], v, f"{where}.{k}") for k, v in value.items()}
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {float: number, int: number and isinstance(value, int), str: isinstance(value, str),
          bool: isinstance(value, bool)}[kind]
    _expect(ok, where, kind.__name__, value)
    return value


def _write(value: Any) -> Any:
    if isinstance(value, Constants):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_write(v) for v in value]
    if isinstance(value, dict):
        return {k: _write(v) for k, v in value.items()}
    return value
