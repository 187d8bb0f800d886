"""Is an indexed dataset the one its sidecar describes? Checked before Megatron opens it.

Why: Megatron trusts ``.bin``/``.idx`` blindly. A truncated file ends in a raw ``struct``/``numpy`` traceback,
a ``.bin`` of another corpus tokenised with the same tokenizer trains silently, and a re-made dataset under an
old prefix reuses index caches built for the old data (``IndexError`` or a giant allocation). The checks:

* the ``.idx`` header (Megatron's ``MMIDIDX`` format, version 1, our token dtype) and its exact size;
* the ``.bin`` size against the token count the ``.idx`` implies, and both against ``num_documents`` /
  ``num_tokens`` in ``<prefix>.meta.json``;
* a content fingerprint (hash of the ``.idx``, the ``.bin`` size and its first and last MiB) that names the
  index cache, so caches of other data are never reused.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy

from emo_plugin.data.dataset_meta import DatasetMeta
from emo_plugin.errors import DataError

INDEX_MAGIC = b"MMIDIDX\x00\x00"
HEADER_BYTES = len(INDEX_MAGIC) + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count
DTYPE_CODES = {numpy.dtype(numpy.uint16): 8, numpy.dtype(numpy.int32): 4}  # Megatron's DType codes
SAMPLE_BYTES = 1 << 20
REMAKE = "re-run tools/preprocess_data.py for this prefix"


def _header(idx: Path) -> tuple[int, int, int, int]:
    """(version, dtype code, sequence count, document count) of a Megatron ``.idx``."""
    with idx.open("rb") as stream:
        head = stream.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or not head.startswith(INDEX_MAGIC):
        raise DataError(f"{idx}: not a Megatron index (truncated or wrong header, {len(head)} bytes); {REMAKE}")
    version, code, sequences, documents = struct.unpack("<QBQQ", head[len(INDEX_MAGIC):])
    return version, code, sequences, documents


_checked: dict[tuple, str] = {}


def check_dataset(prefix: str | os.PathLike[str], meta: DatasetMeta) -> str:
    """Refuse a damaged or mismatched ``prefix.{bin,idx}``; return the dataset's content fingerprint.

    Remembered per (files, sizes, modification times) so the dataset builder's two looks cost one check."""
    stats = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in map(Path, (f"{prefix}.idx", f"{prefix}.bin"))
                  if p.is_file())
    key = (str(Path(prefix).resolve()), stats, meta.num_documents, meta.num_tokens, meta.token_dtype)
    if key not in _checked:
        _checked[key] = _check(prefix, meta)
    return _checked[key]


def _check(prefix: str | os.PathLike[str], meta: DatasetMeta) -> str:
    idx, bin_ = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for path in (idx, bin_):
        if not path.is_file():
            raise DataError(f"{path}: missing (an indexed dataset is {prefix}.bin + .idx + .meta.json); {REMAKE}")
    version, code, sequences, documents = _header(idx)
    dtype = numpy.dtype(meta.token_dtype)
    if version != 1 or code != DTYPE_CODES.get(dtype):
        raise DataError(f"{idx}: index version {version} / dtype code {code}, expected version 1 and the code of "
                        f"{dtype.name} recorded in {prefix}.meta.json; {REMAKE}")
    expected_idx = HEADER_BYTES + sequences * (4 + 8) + documents * 8
    if idx.stat().st_size != expected_idx:
        raise DataError(f"{idx}: {idx.stat().st_size} bytes, but its header ({sequences} sequences) implies "
                        f"{expected_idx}; the file is truncated or damaged; {REMAKE}")
    if sequences != meta.num_documents or documents != sequences + 1:
        raise DataError(f"{idx}: {sequences} documents, but {prefix}.meta.json records {meta.num_documents}; the "
                        f".idx and the sidecar come from different runs; {REMAKE}")
    lengths = numpy.fromfile(idx, dtype=numpy.int32, count=sequences, offset=HEADER_BYTES)
    tokens = int(lengths.sum(dtype=numpy.int64))
    bin_bytes = bin_.stat().st_size
    if tokens != meta.num_tokens or bin_bytes != tokens * dtype.itemsize:
        raise DataError(
            f"{bin_}: {bin_bytes} bytes = {bin_bytes / dtype.itemsize:g} {dtype.name} tokens, but {idx} indexes "
            f"{tokens} tokens and {prefix}.meta.json records {meta.num_tokens}; the .bin is truncated or belongs to "
            f"another dataset; {REMAKE}"
        )
    return fingerprint(idx, bin_)


def fingerprint(idx: Path, bin_: Path) -> str:
    """Hash of the whole ``.idx`` plus the ``.bin``'s size, first and last MiB (cheap for any corpus size)."""
    digest = hashlib.sha256()
    with idx.open("rb") as stream:
        while chunk := stream.read(16 * SAMPLE_BYTES):
            digest.update(chunk)
    size = bin_.stat().st_size
    digest.update(str(size).encode())
    with bin_.open("rb") as stream:
        digest.update(stream.read(SAMPLE_BYTES))
        stream.seek(max(0, size - SAMPLE_BYTES))
        digest.update(stream.read(SAMPLE_BYTES))
    return digest.hexdigest()
