"""Run as `python tests/flag_probe.py MODULE [REQUIRED_FLAG=VALUE ...]`: imports the
command module MODULE (which defines its flags, nothing else), then parses every numeric
flag of it with a set of bad values, as `wsdhash.cli.run` does, and prints one JSON
object: flag name -> {"integer": bool, "results": {case: "accepted" | "parse: ..." |
"bound: ..."}}. A separate process per command: the commands' flags share names."""

import importlib
import json
import sys

from absl import flags

CASES = {
    "default": None,
    "zero": "0",
    "minus_one": "-1",
    "nan": "nan",
    "inf": "inf",
    "minus_inf": "-inf",
    "huge_integer": "1" + "0" * 30,
    "huge_float": "1e300",
    "wrong_type": "abc",
    "empty": "",
}


def main(module: str, required: list[str]) -> None:
    importlib.import_module(module)
    from wsdhash import flag_bounds

    values = flags.FLAGS
    report = {}
    for flag in flag_bounds.numeric_flags(values):
        results = {}
        for case, text in CASES.items():
            argv = ["probe", *(f"--{item}" for item in required)]
            if text is not None:
                argv.append(f"--{flag.name}={text}")
            values.unparse_flags()
            try:
                values(argv)
                flag_bounds.check(values)
                results[case] = "accepted"
            except flags.Error as error:
                results[case] = f"parse: {error}"
            except ValueError as error:
                results[case] = f"bound: {error}"
        report[flag.name] = {
            "integer": isinstance(flag.parser, flags.IntegerParser),
            "declared": flag.name in flag_bounds.BOUNDS,
            "results": results,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
