"""`python -m wsdhash.extract` (kept): the command is wsdhash/commands/extract.py."""

from wsdhash.commands.extract import run

if __name__ == "__main__":
    run()
