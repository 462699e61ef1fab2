"""One WebDataset tar, committed atomically through :class:`~curastream.engine.storage.Storage`:
members in the reproducible form the image shards use (mode 0644, mtime 0, uid/gid 0), so an
export of the same data is the same bytes."""

from __future__ import annotations

import tarfile

from curastream.engine.storage import Storage
from curastream.writers.image_shards import member_header

_BLOCK, _RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE


class TarShard:
    def __init__(self, storage: Storage, rel: str):
        self.rel = rel
        self._cm = storage.open_atomic(rel)
        self._file = self._cm.__enter__()
        self._offset = 0
        self.samples = 0
        self.nbytes = 0  # member payload, what --max-shard-bytes counts

    def add_sample(self, key: str, members: dict[str, bytes]) -> list[str]:
        names = []
        for ext, data in members.items():
            name = f"{key}.{ext}"
            header = member_header(name, len(data))
            pad = b"\0" * (-len(data) % _BLOCK)
            self._file.write(header)
            self._file.write(data)
            self._file.write(pad)
            self._offset += len(header) + len(data) + len(pad)
            self.nbytes += len(data)
            names.append(name)
        self.samples += 1
        return names

    def close(self) -> None:
        end = self._offset + 2 * _BLOCK
        self._file.write(b"\0" * (2 * _BLOCK + (-end % _RECORD)))
        self._cm.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        err = exc or RuntimeError("shard aborted")
        self._cm.__exit__(type(err), err, None)
