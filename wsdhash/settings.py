"""Settings declared once: a dataclass field that carries its flag, range, choices,
resume policy and help in its metadata (`setting`).

A settings dataclass (`wsdhash.training.config.TrainConfig` and the dataclasses it
nests) declares each field with `setting(...)`; everything else reads the metadata:

* `wsdhash.commands.setting_flags` defines the command-line flags from it and builds the
  dataclass from parsed flags (the entry point calls it; this module imports no absl);
* `check(instance)`, called by the dataclass's `__post_init__`, checks choices and
  minimums with messages naming the flag;
* `wsdhash.training.run_info` reads the resume policies (`resume_policies`);
* `wsdhash.flag_bounds` gets the flags' ranges (`flag_bounds_of`, declared by the bridge).

The metadata of one field (`Setting`): the flag that sets it (None: no flag of its
own), the flag's kind, default (when it differs from the field's), choices and help;
the flag's range (`bound`) and the smallest value the field accepts (`minimum`, by
default the range's); the resume policy: `MUST_MATCH` (a resumed run must have the
stored value), `FREE` (may differ: it does not change what a run computes),
`CHANGEABLE` (may differ when `--resume_with_changes` names it) or `PATH` (must match,
compared as a path); and `unrecorded`: the value every run recorded before the field
existed used (a stored run that lacks the field is compared as if it had it).

A settings dataclass nests others in two ways. A field holding a *group* (`group(cls)`:
related settings, e.g. `TrainConfig.model`) adds no name: the group's settings are
named, flagged and recorded as if they were the parent's own (`config.model.bits` is
the setting "bits", flag --hash_bit). A field holding another settings dataclass by
default value (e.g. `optimizer: OptimizerConfig = OptimizerConfig()`) names its
settings with its own name ("optimizer.learning_rate"). A setting's *key* is that
dotted name: `walk` yields it, the resume policies and flags are keyed by it, and the
flat form (`to_flat_dict`, read back by `from_flat_dict`) is `dataclasses.asdict`
with every group's fields in its parent's place.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

MUST_MATCH, FREE, CHANGEABLE, PATH = "must_match", "free", "changeable", "path"
RESUME_POLICIES = (MUST_MATCH, FREE, CHANGEABLE, PATH)
_KEY = "wsdhash.setting"
_GROUP = "wsdhash.settings_group"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "no such value" (an unrecorded default, a flag default)


@dataclasses.dataclass(frozen=True)
class Setting:
    """The metadata of one settings field (see the module docstring).

    Attributes:
        key: the setting's name in the flat form (run_info.json, resume messages) when
            it is not the field's own, e.g. "method" for `MethodConfig.name`.
        flag: the flag's name; "" (the default) means the setting's key; None: the
            field has no flag of its own (an entry point computes it).
        kind: "string", "integer", "float", "bool", "enum" or "list"; None: from the
            field's default.
        help: the flag's help.
        choices: the values the field accepts (checked by `check`) and the enum flag's
            choices.
        flag_choices: the enum flag's choices when they are not `choices` (e.g. with an
            "auto" the entry point resolves), or a callable returning them (a
            registry's names, read when the flag is defined); not checked by `check`.
        flag_default: the flag's default when it is not the field's (UNSET: the same).
        set_by: for a field with no flag of its own, the flag that computes it (named
            in messages and by `--resume_with_changes`), e.g. "lr_decay_every".
        bound: the flag's range (a `wsdhash.flag_bounds.Bound`), None when it is not a
            numeric flag or its range lives in `flag_bounds.BOUNDS` (shared flags).
        minimum: the smallest value the field accepts; None: the bound's minimum.
        resume: MUST_MATCH, FREE, CHANGEABLE or PATH.
        unrecorded: the value assumed for a stored run that did not record the field.
    """

    key: str = ""
    flag: str | None = ""
    kind: str | None = None
    help: str = ""
    choices: tuple | None = None
    flag_choices: tuple | Callable[[], Any] | None = None
    flag_default: Any = UNSET
    set_by: str | None = None
    bound: Any = None
    minimum: float | None = None
    resume: str = MUST_MATCH
    unrecorded: Any = UNSET

    def __post_init__(self):
        if self.resume not in RESUME_POLICIES:
            raise ValueError(f"resume policy {self.resume!r}: expected one of {RESUME_POLICIES}")

    def flag_choice_values(self) -> tuple | None:
        """The enum flag's choices (None: not an enum)."""
        choices = self.choices if self.flag_choices is None else self.flag_choices
        if choices is None:
            return None
        return tuple(choices() if callable(choices) else choices)

    def too_low(self, value: Any) -> str | None:
        """The requirement `value` misses ("> 0", ">= 1"), None when it meets it."""
        if value is None or (self.minimum is None and self.bound is None):
            return None
        if self.minimum is not None:
            return None if value >= self.minimum else f">= {self.minimum}"
        low, above = self.bound.minimum, self.bound.above
        if (value > low) if above else (value >= low):
            return None
        return f"{'>' if above else '>='} {_number(low)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    **metadata: Any,
) -> Any:
    """A dataclass field with its `Setting` metadata (keywords: `Setting`'s attributes)."""
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={_KEY: Setting(**metadata)}
    )


def setting_of(field: dataclasses.Field) -> Setting:
    """A field's `Setting` (an undeclared field: a must-match setting with no flag)."""
    return field.metadata.get(_KEY) or Setting(flag=None)


def key_of(field: dataclasses.Field) -> str:
    """The setting's name in the flat form (its field's name unless `key=` says)."""
    return setting_of(field).key or field.name


def flag_name(field: dataclasses.Field) -> str | None:
    """The flag that sets `field` (None: none of its own)."""
    flag = setting_of(field).flag
    return key_of(field) if flag == "" else flag


def group(cls: type) -> Any:
    """A field holding the settings group `cls` (its default: `cls()`), whose settings
    are named, flagged and recorded as the parent's own (see the module docstring)."""
    return dataclasses.field(default_factory=cls, metadata={_GROUP: True})


def is_group(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get(_GROUP))


def walk(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Setting]]:
    """(key, field, setting) of every setting of the settings dataclass `cls`, nested
    dataclasses' included: a group's keyed as its parent's, another nested
    dataclass's dotted with its field's name ("optimizer.learning_rate")."""
    for field in dataclasses.fields(cls):
        nested = nested_type(field)
        if nested is not None:
            yield from walk(nested, prefix if is_group(field) else f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{key_of(field)}", field, setting_of(field)


def nested_type(field: dataclasses.Field) -> type | None:
    """The settings dataclass `field` holds (a group or a default value), else None."""
    if is_group(field):
        return field.default_factory
    default = field.default
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return type(default)
    return None


def to_flat_dict(instance: Any) -> dict[str, Any]:
    """The flat form of a settings dataclass: `dataclasses.asdict` with every group's
    settings in its parent's place, each under its key."""
    flat = {}
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if is_group(field):
            flat.update(to_flat_dict(value))
        elif nested_type(field) is not None:
            flat[field.name] = to_flat_dict(value)
        else:
            flat[key_of(field)] = copy.deepcopy(value)
    return flat


def from_flat_dict(cls: type, flat: dict[str, Any]) -> Any:
    """`cls` from its flat form (`to_flat_dict`, or JSON of it: a list where the field's
    default is a tuple becomes a tuple); a missing setting takes its default. A nested
    (not group) dataclass's entry may be the dataclass itself.

    Raises:
        TypeError: a key that is no setting of `cls`.
    """
    flat = dict(flat)
    instance = _from_flat(cls, flat)
    if flat:
        raise TypeError(f"{cls.__name__}: no such settings: {', '.join(sorted(flat))}.")
    return instance


def _from_flat(cls: type, flat: dict[str, Any]) -> Any:
    kwargs = {}
    for field in dataclasses.fields(cls):
        nested = nested_type(field)
        if is_group(field):
            kwargs[field.name] = _from_flat(nested, flat)
        elif nested is not None:
            if field.name in flat:  # its flat dict (or already the dataclass)
                value = flat.pop(field.name)
                kwargs[field.name] = (
                    value if isinstance(value, nested) else from_flat_dict(nested, value)
                )
        elif key_of(field) in flat:
            value = flat.pop(key_of(field))
            if isinstance(value, list) and isinstance(field.default, tuple):
                value = tuple(value)
            kwargs[field.name] = value
    return cls(**kwargs)


def field_flags(cls: type) -> dict[str, str]:
    """{dotted path: flag} of every field of `cls` with a flag of its own."""
    return {path: flag for path, field, _ in walk(cls) if (flag := flag_name(field))}


def message_flags(cls: type) -> dict[str, str]:
    """{dotted path: the flag that sets it} of the fields of `cls` set by a flag, theirs
    or (`set_by`) the one that computes them."""
    return {
        path: flag for path, field, meta in walk(cls) if (flag := flag_name(field) or meta.set_by)
    }


def flag_bounds_of(cls: type) -> dict[str, Any]:
    """{flag: its range} of the fields of `cls` that declare one."""
    return {
        flag_name(field): meta.bound
        for _, field, meta in walk(cls)
        if meta.bound is not None and flag_name(field)
    }


def resume_policies(cls: type) -> dict[str, str]:
    """{dotted path: resume policy} of every field of `cls`."""
    return {path: meta.resume for path, _, meta in walk(cls)}


def unrecorded_defaults(cls: type) -> dict[str, Any]:
    """{dotted path: the value a run recorded before the field existed used}."""
    return {path: meta.unrecorded for path, _, meta in walk(cls) if meta.unrecorded is not UNSET}


def check(instance: Any) -> None:
    """Checks the choices and minimums the fields of `instance` (a settings dataclass,
    not its nested ones: each checks itself) declare.

    Raises:
        ValueError: naming the field's flag.
    """
    for field in dataclasses.fields(instance):
        meta, value = setting_of(field), getattr(instance, field.name)
        label = flag_name(field) or key_of(field)
        if meta.choices is not None and value not in meta.choices:
            raise ValueError(f"--{label} must be one of {meta.choices}, got {value!r}.")
        missed = meta.too_low(value)
        if missed:
            raise ValueError(f"--{label} must be {missed}, got {value}.")
