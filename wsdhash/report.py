"""`python -m wsdhash.report` (kept): the command is wsdhash/commands/report.py."""

from wsdhash.commands.report import run

if __name__ == "__main__":
    run()
