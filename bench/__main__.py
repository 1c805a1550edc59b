"""`python -m bench`, and the `tokbench` console script."""

import sys


def main() -> None:
    """The CLI, imported here so that Ctrl-C at any moment, start-up included, exits quietly
    with status 130."""
    try:
        from bench.present.cli import main as cli

        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
