"""``python -m minetune.cli`` runs the command line."""

from minetune.cli import main

if __name__ == "__main__":
    main()
