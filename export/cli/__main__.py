"""``python -m partialnet.export.cli``: the same as ``partialnet-export``."""

from partialnet.export.cli.main import main

if __name__ == "__main__":  # imported (not run) when a tool walks every module
    raise SystemExit(main())
