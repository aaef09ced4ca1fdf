"""``python -m foundry_infer`` runs the ``foundry-infer`` command line."""

import sys

from .cli import main

sys.exit(main())
