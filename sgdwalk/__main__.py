"""``python -m sgdwalk``: the ``sgdwalk`` command, also as ``torchrun ... -m sgdwalk walk ...``."""

import sys

from sgdwalk.cli import main

if __name__ == "__main__":
    sys.exit(main())
