"""``python -m foundry_train``."""

import sys

from foundry_train.cli import main

if __name__ == "__main__":
    sys.exit(main())
