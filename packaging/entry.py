"""Entry point of the one-file binary: PyInstaller runs this file as ``__main__``."""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
