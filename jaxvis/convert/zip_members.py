"""Records of an uncompressed zip archive (torch.save checkpoints, torch.export `.pt2`) read in place.

Contract: `read_stored_member(archive, file, info)` returns the record's bytes as an aligned uint8
array (`jaxvis.convert.host_buffers`); `mapped_member(archive, mapped, info)` returns them as a
read-only view of `mapped`, the whole archive memory-mapped as a uint8 array (no copy at all: the
caller copies what it keeps, typically while changing its layout). Both are CRC-checked like
`ZipFile.read` and raise `zipfile.BadZipFile` naming the record when it is cut off, has no local
header or fails its CRC. PyTorch stores tensor records uncompressed, so their bytes sit in the
file as they are: one `readinto` (or a slice of the mapping) at the offset the local header gives
replaces `ZipFile.read`, which would make a `bytes` object to be copied again. Compressed or
encrypted records go through `ZipFile.read`.

The CRC is computed with ISA-L (`isal`, ~20 GB/s with carry-less multiplication) where it is
installed, else with `zlib` (~2 GB/s): on a 100 MB model zlib's CRC alone costs most of the time
that reading the bytes does.
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np

from jaxvis.convert.host_buffers import aligned_copy, read_aligned

try:
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover -- isal is a dependency; zlib gives the same values, slower
    from zlib import crc32

__all__ = ["crc32", "mapped_member", "read_stored_member"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


def _is_stored(info: zipfile.ZipInfo) -> bool:
    return info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1  # not compressed / encrypted


def _data_offset(head: bytes, info: zipfile.ZipInfo) -> int:
    """Where `info`'s bytes start, from its local header `head` (the first 30 bytes of the record)."""
    if len(head) < _LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f"record {info.filename!r} is cut off")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(head)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"record {info.filename!r} has no local header")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _checked(data: np.ndarray, info: zipfile.ZipInfo) -> np.ndarray:
    if crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"record {info.filename!r} fails its CRC check")
    return data


def read_stored_member(archive: zipfile.ZipFile, file, info: zipfile.ZipInfo) -> np.ndarray:
    """`info`'s bytes as an aligned array (see the module docstring); `file` is the archive opened
    in binary mode."""
    if not _is_stored(info):
        return aligned_copy(np.frombuffer(archive.read(info), np.uint8))
    file.seek(info.header_offset)
    data = read_aligned(file, _data_offset(file.read(_LOCAL_HEADER.size), info), info.file_size)
    if data is None:
        raise zipfile.BadZipFile(f"record {info.filename!r} is cut off")
    return _checked(data, info)


def mapped_member(archive: zipfile.ZipFile, mapped: np.ndarray, info: zipfile.ZipInfo) -> np.ndarray:
    """`info`'s bytes as a read-only view of `mapped` (see the module docstring)."""
    if not _is_stored(info):
        return np.frombuffer(archive.read(info), np.uint8)
    start = _data_offset(mapped[info.header_offset:info.header_offset + _LOCAL_HEADER.size].tobytes(), info)
    if start + info.file_size > mapped.size:
        raise zipfile.BadZipFile(f"record {info.filename!r} is cut off")
    return _checked(mapped[start:start + info.file_size], info)
