"""Entry point for ``python -m cloudput``."""

from cloudput.cli import main

if __name__ == "__main__":
    main()
