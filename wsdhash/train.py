"""`python -m wsdhash.train` (kept): the command is wsdhash/commands/train.py."""

from wsdhash.commands.train import run

if __name__ == "__main__":
    run()
