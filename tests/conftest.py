import os

import matplotlib
from hypothesis import settings

matplotlib.use("Agg")

# CI machines are slow and shared: no per-example deadline, and a fixed
# example sequence so a red CI is always reproducible.
settings.register_profile("tsgen", deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tsgen"))
