"""`python -m retinanet.tools.benchmark`: the same as `retinanet benchmark` (the training
section starts its --memory-child processes this way)."""

import sys

from .cli import main

sys.exit(main())
