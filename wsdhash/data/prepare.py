"""`python -m wsdhash.data.prepare` (kept): the command is wsdhash/commands/prepare.py."""

from wsdhash.commands.prepare import run

if __name__ == "__main__":
    run()
