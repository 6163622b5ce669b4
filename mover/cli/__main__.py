"""``python -m mover.cli``: the same as the ``mover`` command."""

import sys

from mover.cli.main import main

sys.exit(main())
