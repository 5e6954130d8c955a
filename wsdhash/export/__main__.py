"""`python -m wsdhash.export` (kept): the command is wsdhash/commands/export.py."""

from wsdhash.commands.export import run

if __name__ == "__main__":
    run()
