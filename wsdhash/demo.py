"""`python -m wsdhash.demo` (kept): the command is wsdhash/commands/demo.py."""

from wsdhash.commands.demo import run

if __name__ == "__main__":
    run()
