"""The image sizes a served student accepts, shared by the server and the command line."""

from __future__ import annotations

# The most pixels (images × height × width) one request may carry, unless the server is told
# otherwise: one 1024×1024 image (a CamVid frame at full 720×960 fits). The ViT's attention
# grows with the square of an image's pixels, so a larger budget costs far more than it holds:
# ONNX Runtime's peak for the ViT is 0.72 GiB at 1024×1024 and 8.2 GiB at 2048×2048.
DEFAULT_MAX_PIXELS = 1024 * 1024
# The most pixels one request may ask float32 logits for: one CamVid image at its native
# 360×480 (7.6 MB of logits over 11 classes). The backend hands every tensor to tritonserver
# through a shared-memory pool that grows to the largest response and never shrinks, so this
# bounds what an accepted request can leave resident; labels are one byte a pixel.
DEFAULT_MAX_LOGIT_PIXELS = 360 * 480
