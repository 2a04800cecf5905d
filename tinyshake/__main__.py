"""``python -m tinyshake`` runs the command-line app (torchrun uses this too)."""

from tinyshake.cli import main

if __name__ == "__main__":
    main()
