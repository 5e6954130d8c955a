"""`python -m wsdhash.serve` (kept): the command is wsdhash/commands/serve.py."""

from wsdhash.commands.serve import run

if __name__ == "__main__":
    run()
