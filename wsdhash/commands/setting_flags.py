"""The bridge between a settings dataclass (`wsdhash.settings`) and absl flags.

`define_flags(cls, ...)` defines one flag for every field of `cls` (nested dataclasses
and groups included: `settings.walk`) that names one in its metadata, with the metadata's kind, default, choices
and help, and declares the flag's range in `wsdhash.flag_bounds`; `config_from_flags`
builds `cls` from the parsed flags. Library modules define no flags: an entry point
calls `define_flags` when it is imported (`wsdhash.train` for `TrainConfig`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import flags

from wsdhash import flag_bounds, settings

_DEFINE = {
    "string": flags.DEFINE_string,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "bool": flags.DEFINE_bool,
    "list": flags.DEFINE_list,
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (list, tuple)):
        return "list"
    return "string"


def flag_default(field: dataclasses.Field, meta: settings.Setting) -> Any:
    """The default of the flag that sets `field`."""
    if meta.flag_default is not settings.UNSET:
        return meta.flag_default
    return field.default


def computed(meta: settings.Setting) -> bool:
    """Whether the entry point computes the field from its flag (its flag differs from
    the field in default or kind), rather than the flag's value being the field's."""
    return meta.flag_default is not settings.UNSET or meta.kind is not None


def define_flags(cls: type, flag_values: flags.FlagValues, module_name: str) -> list[str]:
    """Defines the flags of the settings dataclass `cls` in `flag_values`, as defined
    by the module `module_name` (the entry point: its flags are those `--helpfull`
    lists under it and `FlagValues.get_flags_for_module` returns); returns their names.
    """
    names = []
    for _, field, meta in settings.walk(cls):
        name = settings.flag_name(field)
        if not name:
            continue
        default = flag_default(field, meta)
        where = {"flag_values": flag_values, "module_name": module_name}
        choices = meta.flag_choice_values()
        if choices is not None:
            flags.DEFINE_enum(name, default, list(choices), meta.help, **where)
        else:
            kind = meta.kind or _kind(field.default if default is None else default)
            _DEFINE[kind](name, default, meta.help, **where)
        if meta.bound is not None:
            flag_bounds.declare(name, meta.bound)
        names.append(name)
    return names


def config_from_flags(cls: type, flag_values: flags.FlagValues, values: dict[str, Any]):
    """`cls` from the parsed flags: each field its flag's value, except those in
    `values` ({setting key (`settings.walk`): value}: the fields the entry point
    computes, and those with no flag of their own, which otherwise keep their
    defaults).

    Raises:
        ValueError: a field whose flag the entry point must turn into its value (another
            default or kind than the field's) is missing from `values`.
    """
    return _build(cls, flag_values, values, "")


def _build(cls: type, flag_values: flags.FlagValues, values: dict[str, Any], prefix: str):
    kwargs = {}
    for field in dataclasses.fields(cls):
        meta = settings.setting_of(field)
        nested = settings.nested_type(field)
        if settings.is_group(field):  # its settings are keyed as this one's
            kwargs[field.name] = _build(nested, flag_values, values, prefix)
            continue
        path = f"{prefix}{field.name if nested else settings.key_of(field)}"
        if path in values:
            kwargs[field.name] = values[path]
        elif nested is not None:
            kwargs[field.name] = _build(nested, flag_values, values, f"{path}.")
        elif settings.flag_name(field):
            if computed(meta):
                raise ValueError(
                    f"{cls.__name__}.{path}: --{settings.flag_name(field)} "
                    "needs the entry point's conversion (values[...])."
                )
            kwargs[field.name] = flag_values[settings.flag_name(field)].value
    return cls(**kwargs)
