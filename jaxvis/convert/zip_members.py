"""Records of an uncompressed zip archive (torch.save checkpoints, torch.export `.pt2`) read in place.

Contract: `read_stored_member(archive, file, info)` returns the record's bytes as an aligned uint8
array (`jaxvis.convert.host_buffers`), CRC-checked like `ZipFile.read`, or raises
`zipfile.BadZipFile` naming the record when it is cut off, has no local header or fails its CRC.
PyTorch stores tensor records uncompressed, so their bytes sit in the file as they are: one
`readinto` at the offset the local header gives replaces `ZipFile.read`, which would make a
`bytes` object to be copied again into aligned memory. Compressed or encrypted records go through
`ZipFile.read`.
"""

from __future__ import annotations

import struct
import zipfile
import zlib

import numpy as np

from jaxvis.convert.host_buffers import aligned_copy, read_aligned

__all__ = ["read_stored_member"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


def read_stored_member(archive: zipfile.ZipFile, file, info: zipfile.ZipInfo) -> np.ndarray:
    """`info`'s bytes (see the module docstring); `file` is the archive opened in binary mode."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
        return aligned_copy(np.frombuffer(archive.read(info), np.uint8))
    file.seek(info.header_offset)
    head = file.read(_LOCAL_HEADER.size)
    if len(head) < _LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f"record {info.filename!r} is cut off")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(head)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"record {info.filename!r} has no local header")
    data = read_aligned(file, info.header_offset + _LOCAL_HEADER.size + name_length + extra_length, info.file_size)
    if data is None:
        raise zipfile.BadZipFile(f"record {info.filename!r} is cut off")
    if zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"record {info.filename!r} fails its CRC check")
    return data
