"""``python -m llmrec <command> ...`` (also what ``torchrun -m llmrec train`` and ``accelerate launch -m llmrec``
run): the same dispatcher as the ``llmrec`` console script."""

import sys

from llmrec.cli import main

sys.exit(main())
