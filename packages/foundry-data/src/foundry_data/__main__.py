"""``python -m foundry_data`` runs the ``foundry-data`` command."""

import sys

from foundry_data.cli import main

if __name__ == "__main__":
    sys.exit(main())
