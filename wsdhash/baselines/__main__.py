"""`python -m wsdhash.baselines` (kept): the command is wsdhash/commands/baselines.py."""

from wsdhash.commands.baselines import run

if __name__ == "__main__":
    run()
