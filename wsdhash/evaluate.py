"""`python -m wsdhash.evaluate` (kept): the command is wsdhash/commands/evaluate.py."""

from wsdhash.commands.evaluate import run

if __name__ == "__main__":
    run()
