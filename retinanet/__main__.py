"""`python -m retinanet ...`, the same as the `retinanet` command; torchrun runs it this way:
`torchrun --nproc_per_node 2 -m retinanet train CONFIG ...`."""

import sys

from retinanet.cli import main

if __name__ == "__main__":
    sys.exit(main())
