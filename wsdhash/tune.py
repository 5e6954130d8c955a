"""`python -m wsdhash.tune` (kept): the command is wsdhash/commands/tune.py."""

from wsdhash.commands.tune import run

if __name__ == "__main__":
    run()
