"""`python -m bystroq` runs the CLI."""

from bystroq.cli import main

if __name__ == "__main__":
    main()
