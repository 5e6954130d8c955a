"""`python -m wsdhash.pipeline` (kept): the command is wsdhash/commands/pipeline.py."""

from wsdhash.commands.pipeline import run

if __name__ == "__main__":
    run()
