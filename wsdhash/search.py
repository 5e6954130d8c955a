"""`python -m wsdhash.search` (kept): the command is wsdhash/commands/search.py."""

from wsdhash.commands.search import run

if __name__ == "__main__":
    run()
