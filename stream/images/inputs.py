"""What an image input is and what it is called: the :class:`ImageInput` record, the file
extensions that count as images or containers, the output-key rules, and the final
de-duplicated, key-unique, ordered list that listing hands to reading.

Order. The list is sorted by key, except that the samples of one WebDataset tar or Parquet file
stay together, in their order inside that container, placed where the container's own key sorts.
That lets reading go through every container in one sequential pass while still yielding in
list order (a key-sorted list would interleave members of different tars and force either
re-reading each tar or buffering it).

Keys. Output keys contain only ``[A-Za-z0-9_-]`` (SPEC §1: no dots; no slashes so user data can
never name a path outside the output dir), are at most :data:`MAX_KEY_LEN` long, and are unique
case-insensitively (tars are extracted on case-insensitive filesystems too). Keys that collide
after sanitising *all* get a suffix hashed from where the input came from, so no key depends on
which input was seen first. That hash uses the source as the user typed it (plus the path below
it), never an absolute path, so the same command gives the same keys on another machine.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import stat
from dataclasses import dataclass

from curastream.engine.names import fsbytes, printable

# GIF and the PNM family are listed so that such files show up as decode rejects (with a reason)
# instead of vanishing silently; which formats decode is the decoder's business.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".mpo",
     ".gif", ".pbm", ".pgm", ".ppm", ".pnm"}
)
TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
PARQUET_EXTENSIONS = (".parquet",)
MAX_KEY_LEN = 150
_NOT_KEY_CHAR = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ImageInput:
    key: str  # output key: [A-Za-z0-9_-]+, unique in the list
    source: str  # absolute local path or URL; for tar/parquet the container file
    member: str | None  # tar sample key / parquet row index; None for plain files
    size: int | None  # bytes, when the listing knew it
    kind: str  # "file" | "wds" | "parquet"
    # Parquet: the image column chosen when listing, so reading cannot pick another one.
    column: str | None = None


def source_identity(source: str, member: str | None) -> str:
    """What an item is, whatever its key: the shards' ``original_path`` (``source::member``
    for an item inside a tar or Parquet). Resume skips by this, never by the key, which is only
    a name (day1/IMG_1.jpg and day2/IMG_1.jpg share one)."""
    return printable(source) if member is None else f"{printable(source)}::{printable(member)}"


def sha8(s: str) -> str:
    return hashlib.sha1(fsbytes(s)).hexdigest()[:8]


def split_ext(name: str) -> tuple[str, str]:
    """(name without its extension, extension lowercased); containers' double extensions too."""
    base = name.rsplit("/", 1)[-1]
    low = base.lower()
    for ext in TAR_EXTENSIONS + PARQUET_EXTENSIONS:
        if low.endswith(ext) and len(base) > len(ext):
            return name[: len(name) - len(ext)], ext
    dot = base.rfind(".")
    if dot <= 0:  # no extension, or a dot-name such as ".profile"
        return name, ""
    return name[: len(name) - (len(base) - dot)], low[dot:]


def make_key(name: str, strip_extension: bool = False) -> str:
    """A safe output key for ``name`` (a relative path, a sample key, a key column value).

    Path components ``''``, ``.`` and ``..`` are dropped, the rest joined with ``_``; every other
    character outside ``[A-Za-z0-9_-]`` (dots, spaces, non-ASCII, undecodable bytes) becomes
    ``_``. ``strip_extension`` drops the file extension first (``sub/a.photo.jpg`` ->
    ``sub_a_photo``). Never empty, never longer than :data:`MAX_KEY_LEN`: such names get a hash
    of the original so they stay distinct.
    """
    original = name
    name = name.replace("\x00", "")
    if strip_extension:
        name = split_ext(name)[0]
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".", "..")]
    key = _NOT_KEY_CHAR.sub("_", "_".join(parts))
    if not key:
        return "_" + sha8(original)
    if len(key) > MAX_KEY_LEN:
        key = key[: MAX_KEY_LEN - 9] + "_" + sha8(original)
    return key


def with_suffix(key: str, suffix: str) -> str:
    return f"{key[: MAX_KEY_LEN - len(suffix) - 1]}_{suffix}"


def is_remote(src: str) -> bool:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", src)
    return bool(m) and m.group(1).lower() not in ("file", "local")


@dataclass
class Candidate:
    """An input found while listing, with what deduplication and ordering need to know."""

    key: str
    source: str
    member: str | None
    size: int | None
    kind: str
    identity: str  # machine-independent name of the input route (typed root + relative path)
    group: str  # sort key of the unit this input belongs to (its own key, or its container's)
    pos: int = 0  # position inside a container
    column: str | None = None


def finalise(cands: list[Candidate]) -> list[ImageInput]:
    """The listing's final inputs: each source once, keys unique, in list order (module doc)."""
    # One route per source: the same file reached twice (two overlapping roots, or a dir and
    # an explicit name) is read once, under the route whose key sorts first: a rule that does
    # not depend on the order sources were given in.
    route: dict[str, tuple[str, str]] = {}
    for c in cands:
        r = (c.group, c.identity)
        if c.source not in route or r < route[c.source]:
            route[c.source] = r
    kept: dict[tuple[str, str | None], Candidate] = {}
    for c in cands:
        if (c.group, c.identity) == route[c.source]:
            kept.setdefault((c.source, c.member), c)
    out = list(kept.values())

    for rnd in range(8):
        groups = collections.defaultdict(list)
        for c in out:
            groups[c.key.lower()].append(c)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        for g in clashes:
            for c in g:
                basis = f"{c.identity}\x00{c.member or ''}" + (f"\x00{rnd}" if rnd else "")
                new = with_suffix(c.key, sha8(basis))
                if c.kind == "file":
                    c.group = new
                c.key = new
    else:  # pragma: no cover - needs a sha1 collision
        raise RuntimeError("could not make input keys unique")

    kind_rank = {"file": 0, "wds": 1, "parquet": 2}
    out.sort(key=lambda c: (c.group, kind_rank[c.kind], c.identity, c.pos, c.key))
    return [ImageInput(c.key, c.source, c.member, c.size, c.kind, c.column) for c in out]


_SPECIAL_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                  (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def not_a_file(path: str) -> str | None:
    """Why a named path cannot be read as an input, found by stat alone: opening a FIFO or a
    device blocks the reader, maybe forever. None: a regular file (or a failure the read
    itself reports better, such as a permission)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                return f"dangling symlink -> {printable(os.readlink(path))}"
            except OSError:
                return "dangling symlink"
        return None
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return None
    kind = next((k for test, k in _SPECIAL_KINDS if test(st.st_mode)), "special file")
    return f"not a regular file ({kind})"
