"""``python -m ctrlalign.cli`` (what ``accelerate launch -m ctrlalign.cli`` runs)."""

import sys

from ctrlalign.cli import main

sys.exit(main())
