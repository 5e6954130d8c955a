"""The command-line entry points, one module per console script, and the only place
flags are defined (flags shared by several commands: `flag_groups`).

| command | console script | `python -m` spelling (kept, a thin shim) |
|---|---|---|
| `prepare` | `wsdhash-prepare` | `wsdhash.data.prepare` |
| `tags` | `wsdhash-tags` | `wsdhash.tags` |
| `extract` | `wsdhash-extract` | `wsdhash.extract` |
| `train` | `wsdhash-train` | `wsdhash.train` |
| `tune` | `wsdhash-tune` | `wsdhash.tune` |
| `baselines` | `wsdhash-baselines` | `wsdhash.baselines` |
| `evaluate` | `wsdhash-evaluate` | `wsdhash.evaluate` |
| `report` | `wsdhash-report` | `wsdhash.report` |
| `export` | `wsdhash-export` | `wsdhash.export` |
| `search` | `wsdhash-search` | `wsdhash.search` |
| `serve` | `wsdhash-serve` | `wsdhash.serve` |
| `pipeline` | `wsdhash-pipeline` | `wsdhash.pipeline` |
| `demo` | `wsdhash-demo` | `wsdhash.demo` |

Each module defines its flags at import and a `run()` that calls `wsdhash.cli.run`
(one-line errors, the log file, bounded numeric flags, flagfiles); it imports
TensorFlow only inside `main`. The library (everything outside this package) defines no
flags. Two command modules that define a flag of the same name cannot both be imported
into one process (absl's flags are global): tests run commands in child processes.
"""
