"""The image sizes a served student accepts, shared by the server and the command line."""

from __future__ import annotations

# The largest image (H×W pixels) one request may carry, unless the server is told otherwise.
DEFAULT_MAX_PIXELS = 2048 * 2048
