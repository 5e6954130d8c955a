"""`python -m wsdhash.tags` (kept): the command is wsdhash/commands/tags.py."""

from wsdhash.commands.tags import run

if __name__ == "__main__":
    run()
