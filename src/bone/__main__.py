"""`python -m bone ...` is the `bone` command (also under `accelerate launch -m bone` / `torchrun -m bone`)."""
import sys

from .cli import main

sys.exit(main())
