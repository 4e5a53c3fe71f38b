"""Crafted hostile files (issue 25): forged .npy headers, deflate bombs, .keras archives with
chosen members, image headers declaring huge sizes, TFRecord lengths. Real bytes on disk, the
way an attacker would write them."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np


def npy_header(shape: tuple[int, ...], descr: str = "<f4", fortran: bool = False) -> bytes:
    """An .npy magic and header declaring ``shape``, as numpy writes it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def npz(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    """An .npz holding ``members`` (name → the .npy bytes, header and data) as given."""
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return path


def deflate_bomb(path: Path, mib: int = 400) -> Path:
    """A valid .npz whose x is ``mib`` MiB of zeros, deflated about a thousandfold."""
    n = mib * 2**20 // 256  # samples of 8×8×1 float32
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_header((n, 8, 8, 1)))
            zeros = bytes(16 * 2**20)
            for _ in range(n * 256 // len(zeros)):
                f.write(zeros)
        z.writestr("y.npy", npy_header((n,), "<i8") + bytes(8 * n))
    return path


def keras_with(src: Path, dest: Path, extra: dict[str, bytes] | None = None,
               replace: dict[str, bytes] | None = None) -> Path:
    """A copy of the .keras archive ``src`` with members added or replaced, byte for byte
    (zipfile would refuse nothing: names like ``../x`` are stored as given)."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    files.update(replace or {})
    files.update(extra or {})
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo("placeholder")
            info.filename = name  # ZipInfo() would strip a leading "/"
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return dest


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height grey pixels, holding one row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(bytes(1 + min(width, 64)))) + _chunk(b"IEND", b""))


def tfrecord_declaring(length: int) -> bytes:
    """A TFRecord file whose one record declares ``length`` bytes and holds 16."""
    return struct.pack("<QI", length, 0) + bytes(16 + 4)
