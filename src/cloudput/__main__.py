"""Entry point for ``python -m cloudput``."""

from cloudput.cli.app import main

if __name__ == "__main__":
    main()
