"""``python -m tsgen``: the same as the ``tsgen`` console script."""
import sys

from tsgen.cli import main

sys.exit(main())
