"""Names that come from users' files, made safe for UTF-8 outputs (Parquet, JSON, IPC)."""

from __future__ import annotations


def fsbytes(s: str) -> bytes:
    # Names from os/tarfile carry undecodable bytes as surrogateescape; hash those bytes so the
    # hash matches what is on disk, and never fail on a stray lone surrogate.
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


def printable(s: str) -> str:
    """``s`` with undecodable filename bytes shown as ``\\xNN``: safe for UTF-8 (Parquet, JSON)."""
    return fsbytes(s).decode("utf-8", "backslashreplace")
