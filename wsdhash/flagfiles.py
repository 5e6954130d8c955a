"""`--flagfile=` expansion for every command, with nested paths relative to their file.

absl reads a flagfile named inside another flagfile relative to the working directory,
so a flagfile that includes a sibling (`--flagfile=common.flags`) works only when the
command runs from the folder it lives in. `expand(argv)` replaces each `--flagfile=FILE`
(also `-flagfile=FILE` and `--flagfile FILE`) by the flags FILE holds, before absl
parses them, resolving paths this way:

* on the command line: relative to the working directory (as absl does);
* inside a flagfile: relative to the folder of the file that names it. When no file
  is there but the path exists relative to the working directory, that one is read,
  so flagfiles written for absl's rule keep working (the repository's
  `scripts/flags/*.flags` name each other as `scripts/flags/NAME.flags` from the
  repository root);
* `~` is expanded; absolute paths are used as they are.

The rest follows absl's flagfile format: one flag per line, blank lines and lines
starting with `#` or `//` skipped (leading spaces ignored), nesting to any depth, the
included flags standing where the `--flagfile=` line stood (a later value wins), and
nothing after a `--` argument expanded. A file that includes itself, directly or
through others, is an error naming the chain (absl only warned and skipped it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags

_DIRECTIVES = ("--flagfile", "-flagfile")


class FlagfileError(flags.Error):
    """A flagfile that cannot be read; the message names it and who included it."""


def _directive(argument: str) -> tuple[bool, str | None]:
    """(is a flagfile directive, its file name or None when it is the next argument)."""
    for prefix in _DIRECTIVES:
        if argument == prefix:
            return True, None
        if argument.startswith(prefix + "="):
            return True, argument[len(prefix) + 1 :].strip()
    return False, None


def _resolve(name: str, including: str | None) -> str:
    """The path of flagfile `name`, named by the file `including` (None: the command
    line); module doc."""
    name = os.path.expanduser(name)
    if including is None or os.path.isabs(name):
        return name
    beside = os.path.join(os.path.dirname(including), name)
    if os.path.exists(beside):
        return beside
    if os.path.exists(name):
        return name  # absl's rule: relative to the working directory
    raise FlagfileError(
        f"--flagfile={name} in {including}: no such file beside it ({beside}) or in the "
        f"working directory ({os.getcwd()})."
    )


def _lines(path: str, including: str | None, stack: list[str]) -> list[str]:
    """The flags of flagfile `path`, nested flagfiles expanded."""
    key = os.path.realpath(path)
    if key in stack:
        chain = " -> ".join([*stack[stack.index(key) :], key])
        raise FlagfileError(f"--flagfile={path} includes itself ({chain}).")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        where = f" (named in {including})" if including else ""
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise FlagfileError(f"--flagfile={path}{where}: cannot read it ({reason}).") from None
    stack.append(key)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        is_directive, name = _directive(line)
        if not is_directive:
            result.append(line)
        elif name is None:
            raise FlagfileError(f"{path}: {line!r} needs a file name ({line}=FILE).")
        elif name:  # `--flagfile=` with nothing after it is ignored, as absl does
            result.extend(_lines(_resolve(name, path), path, stack))
    stack.pop()
    return result


def expand(argv: Sequence[str]) -> list[str]:
    """`argv` (program name first) with every `--flagfile=` replaced by its flags.

    Raises:
        FlagfileError: a flagfile is missing, unreadable or includes itself.
    """
    argv = list(argv)
    result, rest = argv[:1], argv[1:]
    while rest:
        argument = rest.pop(0)
        if argument == "--":
            result += [argument, *rest]
            break
        is_directive, name = _directive(argument)
        if not is_directive:
            result.append(argument)
            continue
        if name is None:
            if not rest:
                raise FlagfileError(f"{argument} needs a file name.")
            name = rest.pop(0)
        if name:
            result.extend(_lines(_resolve(name, None), None, []))
    return result
