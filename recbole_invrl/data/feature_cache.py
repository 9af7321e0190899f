"""Binary cache of parsed atomic feature files: ``.npy`` arrays and a JSON manifest, no pickle.

One entry per (atomic file, parse settings)::

    <cache dir>/<file name>.<path hash>.<key hash>/
        manifest.json      format version, key (file fingerprint + settings), array specs
        <i>.<part>.npy     one array per column part: float32 matrices, unicode strings, ...

The cache dir is ``feature_cache_dir`` or ``.cache/`` beside the atomic file;
``feature_cache: False`` turns caching off. The key holds the file's absolute path, size,
mtime_ns and a hash of its first and last MiB, the settings that change what parsing
returns, and ``CACHE_FORMAT``; any change gives another entry. An entry is written into a
temporary folder and renamed into place, so readers see a whole entry or none; an entry
that fails its checks (manifest, sizes, dtypes, shapes, CRC-32 of the contents) is deleted
and rebuilt. Arrays are loaded with ``allow_pickle=False``; matrices are memory-mapped
(read-only), and the pages the checksum read are handed back (``release_pages``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

CACHE_FORMAT = 1  # bump when parsing or the entry layout changes
FINGERPRINT_BYTES = 1 << 20  # hashed from each end of the atomic file
STALE_TMP_SECONDS = 3600  # temporary folders older than this were left by killed writers
MANIFEST = "manifest.json"

Columns = dict[str, dict[str, np.ndarray]]


def cache_for(
    filepath, config, settings: dict, logger: logging.Logger | None = None
) -> FeatureCache | None:
    """The cache entry for ``filepath`` parsed with ``settings``; None if caching is off."""
    if config["feature_cache"] is False:
        return None
    root = config["feature_cache_dir"] or Path(filepath).parent / ".cache"
    return FeatureCache(root, filepath, settings, logger)


def fingerprint(path: Path) -> dict:
    """Identity of a file: absolute path, size, mtime_ns and a hash of its first and last MiB."""
    stat = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        if stat.st_size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, stat.st_size - FINGERPRINT_BYTES))
            digest.update(f.read(FINGERPRINT_BYTES))
    return {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ends": digest.hexdigest(),
    }


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """One cache entry: ``load()`` the parsed columns if a valid entry exists, ``save()`` them."""

    def __init__(
        self, root, source_file, settings: dict, logger: logging.Logger | None = None
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.source = Path(source_file).absolute()
        self.logger = logger or logging.getLogger(__name__)
        key = {"format": CACHE_FORMAT, "file": fingerprint(self.source), "settings": settings}
        self.key = json.loads(json.dumps(key, sort_keys=True))  # as it reads back from JSON
        self.prefix = f"{self.source.name}.{_hash(str(self.source))[:8]}."
        self.entry = self.root / f"{self.prefix}{_hash(self.key)[:20]}"

    def load(self) -> Columns | None:
        """The cached columns, or None (no entry, or a broken one, which is deleted)."""
        if not os.path.lexists(self.entry):
            return None
        try:
            return self._read()
        except Exception as err:  # noqa: BLE001 - any damage means: parse again
            self.logger.warning(f"feature cache {self.entry} is unusable ({err!r}); rebuilding it")
            self.discard()
            return None

    def discard(self) -> None:
        """Delete the entry (a damaged one: the next ``save`` writes it afresh)."""
        _remove(self.entry)

    def _read(self) -> Columns:
        manifest = json.loads((self.entry / MANIFEST).read_text())
        if manifest["key"] != self.key:
            raise ValueError("its key does not match this file and settings")
        return {
            name: {part: self._read_array(spec) for part, spec in parts.items()}
            for name, parts in manifest["columns"].items()
        }

    def _read_array(self, spec: dict) -> np.ndarray:
        path = self.entry / spec["file"]
        if path.stat().st_size != spec["bytes"]:
            raise ValueError(f"{path.name} has {path.stat().st_size} bytes, not {spec['bytes']}")
        mmap = "r" if len(spec["shape"]) == 2 else None  # matrices: mapped, not copied
        array = np.load(path, mmap_mode=mmap, allow_pickle=False)
        if array.dtype.str != spec["dtype"] or list(array.shape) != spec["shape"]:
            raise ValueError(f"{path.name} holds {array.dtype.str} {array.shape}, not {spec}")
        if _crc32(array, mapping=file_mapping(array)) != spec["crc32"]:
            raise ValueError(f"{path.name}: checksum mismatch")
        return array

    def save(self, columns: Columns) -> Path | None:
        """Write the entry (temporary folder, then rename); None if it could not be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.entry.name}-", dir=self.root))
        except OSError as err:
            self.logger.warning(
                f"cannot write the feature cache in {self.root} ({err}); set feature_cache_dir "
                "to a writable folder, or feature_cache: False"
            )
            return None
        try:
            specs = _write_arrays(tmp, columns)
            manifest = {"key": self.key, "columns": specs, "written": time.time()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            os.rename(tmp, self.entry)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(err, Exception):
                raise
            if not self.entry.is_dir():  # else another process wrote it first
                self.logger.warning(f"cannot write feature cache {self.entry}: {err}")
            return None
        self._remove_stale()
        return self.entry

    def _remove_stale(self) -> None:
        """Drop entries for older versions of this file, and temporary folders of dead writers."""
        for path in self.root.iterdir():
            if path.name.startswith(self.prefix) and path != self.entry:
                try:
                    key = json.loads((path / MANIFEST).read_text())["key"]
                    stale = key["file"] != self.key["file"]
                except (OSError, ValueError, KeyError, TypeError):
                    stale = True
                if stale:
                    _remove(path)
            elif path.name.startswith(".tmp-") and _age(path) > STALE_TMP_SECONDS:
                _remove(path)


def file_mapping(array: np.ndarray) -> mmap.mmap | None:
    """The read-only memory map under ``array`` (a cached matrix or a view of one), else None."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None or base.closed:
        return None
    with memoryview(base) as view:
        return base if view.readonly else None


def release_pages(mapping: mmap.mmap | None) -> None:
    """Unmap the resident pages of a read-only file mapping from this process: they leave its
    RSS but stay in the page cache, and a later read maps them again (the contents cannot
    change: the mapping is read-only and shared)."""
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def _write_arrays(folder: Path, columns: Columns) -> dict:
    specs = {}
    for i, (name, parts) in enumerate(columns.items()):
        specs[name] = {}
        for part, array in parts.items():
            if array.dtype.hasobject:
                raise TypeError(f"{name}.{part}: object arrays are not cached")
            file = f"{i}.{part}.npy"
            np.save(folder / file, array, allow_pickle=False)
            specs[name][part] = {
                "file": file,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "bytes": (folder / file).stat().st_size,
                "crc32": _crc32(array),
            }
    return specs


def _crc32(array: np.ndarray, block_bytes: int = 1 << 24, mapping: mmap.mmap | None = None) -> int:
    """CRC-32 of an array's bytes in C order (one pass, cheap next to using them), a
    block at a time; a non-contiguous array (a column slice) is copied a block of rows at a
    time. The pages of ``mapping`` (the file under a memory-mapped array) are released
    after every block, so checking a cached matrix does not make it resident."""
    crc = 0
    for block in _byte_blocks(array, block_bytes):
        crc = zlib.crc32(block, crc)
        release_pages(mapping)
    return crc


def _byte_blocks(array: np.ndarray, block_bytes: int):
    """The bytes of ``array`` in C order, as uint8 arrays of about ``block_bytes``."""
    if array.flags.c_contiguous or array.ndim == 0:
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        return (flat[start : start + block_bytes] for start in range(0, len(flat), block_bytes))
    rows = max(1, block_bytes // max(array[0].nbytes, 1))
    return (np.ascontiguousarray(array[start : start + rows]).reshape(-1).view(np.uint8)
            for start in range(0, len(array), rows))


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass
