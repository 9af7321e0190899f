"""Load ``.npy`` / ``.pt`` files from untrusted dataset folders without running their code.

``np.load(allow_pickle=True)`` and ``torch.load(weights_only=False)`` execute whatever a
pickle asks for. The GRCN/MMGCN release stores its validation/test lists and the
user-item dict as pickled object arrays, so :func:`load_npy` parses the ``.npy`` header
itself and unpickles the payload with :class:`RestrictedUnpickler`, which admits only the
globals numpy needs to rebuild arrays (plus ``set``/``frozenset``) and refuses everything
else. The result is then walked to make sure it holds only arrays, lists, tuples, dicts,
sets and integers. ``.pt`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import ast
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import ConversionError

_ALLOWED_WHAT = "only arrays, lists, dicts, sets and integers are allowed"
_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
_scalar = np.int64(0).__reduce__()[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]
_NUMERIC_KINDS = "biufc"


class UnsafePickleError(ConversionError):
    """A pickle asked for something outside the allow-list, or held a disallowed object."""


class _Refused(Exception):
    """Raised inside the unpickler; turned into :class:`UnsafePickleError` with the file name."""


def _integer_scalar(dtype: Any, *args: Any) -> Any:
    """``numpy.core.multiarray.scalar`` restricted to boolean and integer dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biu":
        raise _Refused(f"numpy scalar of dtype {dtype}")
    return _scalar(dtype, *args)


def _latin1_encode(obj: Any, encoding: str = "utf-8", *args: Any) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: str -> latin-1 bytes only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or args:
        raise _Refused(f"_codecs.encode({type(obj).__name__}, {encoding!r})")
    return obj.encode("latin1")


def _checked_reconstruct(cls: Any, *args: Any) -> Any:
    if cls is not np.ndarray:
        raise _Refused(f"array subclass {cls!r}")
    return _reconstruct(cls, *args)


_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _core in ("numpy.core", "numpy._core"):
    _GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _checked_reconstruct
    _GLOBALS[(f"{_core}.multiarray", "scalar")] = _integer_scalar
    _GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _frombuffer
for _builtins in ("builtins", "__builtin__"):
    _GLOBALS[(_builtins, "set")] = set
    _GLOBALS[(_builtins, "frozenset")] = frozenset
_GLOBALS[("_codecs", "encode")] = _latin1_encode


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in the allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("persistent id")


def _refused(what: str, source: str) -> UnsafePickleError:
    return UnsafePickleError(f"refused to unpickle {what} from {source}: {_ALLOWED_WHAT}")


def _unexpected(what: str, source: str) -> UnsafePickleError:
    return UnsafePickleError(f"{source}: pickled data holds {what}; {_ALLOWED_WHAT}")


def check_contents(obj: Any, source: str) -> None:
    """Walk ``obj`` and raise unless it holds only arrays, lists, tuples, dicts, sets and ints."""
    stack = [obj]
    seen: set[int] = set()
    while stack:
        x = stack.pop()
        if isinstance(x, (int, np.integer, np.bool_)):
            continue
        if isinstance(x, np.ndarray):
            if x.dtype == object:
                stack.append(x.ravel().tolist())
            elif x.dtype.kind not in _NUMERIC_KINDS:
                raise _unexpected(f"an array of dtype {x.dtype}", source)
            continue
        if not isinstance(x, (list, tuple, dict, set, frozenset)):
            raise _unexpected(f"an object of type {type(x).__name__}", source)
        if id(x) in seen:
            continue
        seen.add(id(x))
        values = [v for kv in x.items() for v in kv] if isinstance(x, dict) else x
        stack.extend(v for v in values if type(v) is not int)


def read_npy_header(fp: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an open ``.npy`` file, any format version; nothing unpickled."""
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        return fmt.read_array_header_1_0(fp)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fp)
    return _read_header_3_0(fp)


def _read_header_3_0(fp: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The 3.0 header (2.0's layout, text in UTF-8): numpy has no public reader for it."""
    (length,) = struct.unpack("<I", fp.read(4))
    header = ast.literal_eval(fp.read(length).decode("utf-8"))
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        raise ValueError(f"not an .npy header: {header!r:.80}")
    return tuple(header["shape"]), bool(header["fortran_order"]), np.lib.format.descr_to_dtype(header["descr"])


def _corrupt(source: str, err: BaseException) -> ConversionError:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConversionError(f"{source}: truncated or corrupt file ({detail})")


def load_npy(
    path: Path | str, allow_pickle_types: bool = True, mmap_mode: str | None = None
) -> np.ndarray | Any:
    """Load a ``.npy`` file safely.

    Numeric arrays load with ``np.load(allow_pickle=False)`` (optionally memory-mapped).
    Object arrays are unpickled with :class:`RestrictedUnpickler` (never ``np.load``) when
    ``allow_pickle_types`` is true and refused otherwise; a 0-d object array (an
    ``np.save``d dict) is unwrapped to the object it holds. Every failure raises
    :class:`ConversionError` naming the file.
    """
    path = Path(path)
    source = path.name
    try:
        with open(path, "rb") as fp:
            shape, fortran, dtype = read_npy_header(fp)
            if dtype.hasobject:
                if not allow_pickle_types:
                    raise ConversionError(
                        f"{source}: holds pickled Python objects (dtype {dtype}); "
                        "expected a numeric array"
                    )
                arr = _unpickle(fp, source)
                if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
                    raise ConversionError(
                        f"{source}: corrupt object array (header says shape {tuple(shape)})"
                    )
                check_contents(arr, source)
                return arr.item() if arr.ndim == 0 else arr
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except ConversionError:
        raise
    except FileNotFoundError:
        raise ConversionError(f"{source}: file not found ({path})") from None
    except Exception as err:  # numpy raises ValueError/OSError/EOFError on damaged files
        raise _corrupt(source, err) from None


def _unpickle(fp: Any, source: str) -> Any:
    try:
        return RestrictedUnpickler(fp, encoding="latin1").load()
    except _Refused as err:
        raise _refused(str(err), source) from None
    except RecursionError:
        raise ConversionError(f"{source}: pickled data nested too deeply") from None
    except Exception as err:
        raise _corrupt(source, err) from None


def load_pt(path: Path | str) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with one-line errors."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConversionError(f"{path.name}: file not found ({path})") from None
    except pickle.UnpicklingError as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConversionError(
            f"{path.name}: refused or unreadable pickle in a .pt file (only tensors load "
            f"with weights_only=True): {detail}"
        ) from None
    except Exception as err:
        raise _corrupt(path.name, err) from None
