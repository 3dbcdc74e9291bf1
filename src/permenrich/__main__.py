"""``python -m permenrich``: the same command as ``permenrich`` (for environments whose
scripts folder is not on PATH)."""

from permenrich.cli import entry

if __name__ == "__main__":
    entry()
