"""``python -m foundry_eval`` runs the foundry-eval command."""

import sys

from foundry_eval.cli import main

sys.exit(main())
