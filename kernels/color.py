"""BT.601 full-range (JFIF) colour constants, the one definition the kernels share: the luma
weights every score, hash and motion kernel converts RGB with, and the chroma rows of the same
YCbCr transform (JPEG's, so scores agree with what the codec stored).
"""

from __future__ import annotations

BT601_LUMA = (0.299, 0.587, 0.114)
BT601_CB = (-0.168736, -0.331264, 0.5)
BT601_CR = (0.5, -0.418688, -0.081312)
