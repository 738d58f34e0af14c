"""The data gate (Great Expectations 1.x): an edge over the prepared dataset."""

import os

# Before any submodule imports great_expectations, which reads this at import time.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
