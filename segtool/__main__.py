"""Run segtool as `python -m segtool`."""

from segtool.cli.app import main

if __name__ == "__main__":
    main()
