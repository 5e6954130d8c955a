"""Figures and a Markdown summary of codes files and training runs (`wsdhash.report`)."""
