"""The ledger's append-only spool: where records go while the database is unreachable or slow.

One file per writer process under `CHURNOPS_HOME/spool/`, held under an exclusive lock
while the process lives. Each batch is one frame: length, CRC-32, msgpack body, written
and fsynced before the writer counts it durable. Replay reads frames in order and the
database ignores what it already has (idempotent on record id), so a replay interrupted
halfway is simply run again; after a full replay the file is emptied. A frame cut short
by a crash is detected by its length or checksum and ends the file there.

A process that starts finds the spool files of writers that died (their lock is free)
and replays them as its own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")  # body length, CRC-32 of the body
SUFFIX = ".spool"


@dataclass
class SpoolBatch:
    """What one write attempt carried: records (FIELDS order), wrapped keys, checkpoints."""

    records: list[list[Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(dict[str, Any])


def encode_frame(batch: SpoolBatch) -> bytes:
    body = _ENCODER.encode({"records": batch.records, "keys": batch.keys, "checkpoints": batch.checkpoints})
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def read_frames(path: Path) -> Iterator[SpoolBatch]:
    """Every whole frame of a spool file, in order; stops at a torn or corrupt tail."""
    with path.open("rb") as handle:
        data = handle.read()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        body = data[offset + _HEADER.size : offset + _HEADER.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            logger.warning("%s: torn frame at byte %d (a crash mid-write): the rest is ignored", path, offset)
            return
        decoded = _DECODER.decode(body)
        yield SpoolBatch(decoded["records"], decoded["keys"], decoded["checkpoints"])
        offset += _HEADER.size + length


class Spool:
    """This writer's spool file (locked for its lifetime) and the orphans of dead writers."""

    def __init__(self, directory: Path, writer_id: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{writer_id}{SUFFIX}"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def append(self, batch: SpoolBatch) -> int:
        """Write one frame and fsync it; returns the bytes written."""
        frame = encode_frame(batch)
        written = os.write(self._fd, frame)
        if written != len(frame):
            raise OSError(f"{self.path}: short write ({written} of {len(frame)} bytes)")
        os.fsync(self._fd)
        return written

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def pending(self) -> bool:
        return self.size() > 0

    def batches(self) -> Iterator[SpoolBatch]:
        return read_frames(self.path)

    def clear(self) -> None:
        """Everything in the file is in the database now."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    def orphans(self) -> list[Path]:
        """Spool files whose writer is gone (their lock can be taken) and that hold frames."""
        found = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == self.path or path.stat().st_size == 0:
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's own spool
            finally:
                os.close(fd)
            found.append(path)
        return found

    def orphan_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.orphans())

    def close(self) -> None:
        os.close(self._fd)
        if self.path.exists() and self.path.stat().st_size == 0:
            self.path.unlink()


def claim(path: Path) -> int | None:
    """Lock an orphan spool file for replay; None when someone else took it first."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release(path: Path, fd: int, replayed: bool) -> None:
    """Delete a fully replayed orphan (under its lock), else leave it for the next attempt."""
    if replayed:
        path.unlink(missing_ok=True)
    os.close(fd)
