"""Between NumPy arrays / torch tensors and what the native module takes.

The native module deals in ``(name, dtype, shape, bytes)`` tuples, with
dtypes named as safetensors names them (``"BF16"``, ``"F32"``...), and gives
files back as one ``bytearray`` plus where each tensor lies in it. This module
maps both ways without copying more than once: arrays become ``bytes`` (one
copy, which the Rust side then reads without another), and loaded tensors
are views into the decoded ``bytearray``.

NumPy has no bfloat16 or float8 types of its own; ``ml_dtypes`` provides them
(the same types JAX uses).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from ._lmc import LmcError

# safetensors dtype name -> NumPy dtype name (ml_dtypes names where NumPy has none).
_NUMPY_NAMES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
_ML_DTYPES = {"bfloat16", "float8_e4m3fn", "float8_e5m2"}

# safetensors dtype name -> torch dtype attribute name.
_TORCH_NAMES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}

TensorArg = Tuple[str, str, List[int], bytes]


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a safetensors dtype name."""
    np_name = _NUMPY_NAMES.get(name)
    if np_name is None:
        raise LmcError(f"dtype {name} has no NumPy equivalent")
    if np_name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError as e:  # pragma: no cover - ml_dtypes is a dependency
            raise LmcError(
                f"{name} arrays need the ml_dtypes package (pip install ml_dtypes)"
            ) from e
        return np.dtype(getattr(ml_dtypes, np_name))
    return np.dtype(np_name).newbyteorder("<")


def _name_of_numpy(dtype: np.dtype, key: str) -> str:
    base = dtype.newbyteorder("=") if dtype.byteorder in "<>" else dtype
    for st_name, np_name in _NUMPY_NAMES.items():
        if np_name in _ML_DTYPES:
            if base.name == np_name:
                return st_name
        elif base == np.dtype(np_name):
            return st_name
    raise LmcError(
        f"tensor {key!r}: dtype {dtype} is not supported (lmc stores bool, "
        "(u)int8/16/32/64, float16/32/64, bfloat16 and float8 e4m3fn/e5m2)"
    )


def _is_torch(x: Any) -> bool:
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(x, mod.Tensor)


def torch_dtype_name(dtype: Any) -> Optional[str]:
    """The safetensors name of a torch dtype, or None if lmc has none."""
    import torch

    for st_name, attr in _TORCH_NAMES.items():
        if getattr(torch, attr, None) == dtype:
            return st_name
    return None


def torch_bytes(t: Any) -> bytes:
    """The little-endian bytes of a torch tensor, C order, copied once."""
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    # Reinterpreting as bytes works for every dtype, bfloat16 included,
    # which NumPy cannot hold itself.
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def to_arg(key: Any, value: Any) -> TensorArg:
    """One tensor (NumPy array, torch tensor, or anything np.asarray takes)."""
    if not isinstance(key, str):
        raise TypeError(f"tensor names must be str, not {type(key).__name__} ({key!r})")
    if _is_torch(value):
        name = torch_dtype_name(value.dtype)
        if name is None:
            raise LmcError(
                f"tensor {key!r}: torch dtype {value.dtype} is not supported (lmc stores bool, "
                "(u)int8/16/32/64, float16/32/64, bfloat16 and float8 e4m3fn/e5m2)"
            )
        if value.layout != sys.modules["torch"].strided:
            raise LmcError(f"tensor {key!r}: only dense (strided) tensors can be stored")
        return (key, name, list(value.shape), torch_bytes(value))
    arr = np.asarray(value)
    name = _name_of_numpy(arr.dtype, key)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return (key, name, list(arr.shape), arr.tobytes(order="C"))


def to_args(tensors: Mapping[str, Any]) -> List[TensorArg]:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of names to arrays, not {type(tensors).__name__}")
    return [to_arg(k, v) for k, v in tensors.items()]


def framework_of(tensors: Mapping[str, Any]) -> Optional[str]:
    """"pt" when every tensor is a torch tensor, "np" when none is, else None."""
    kinds = {_is_torch(v) for v in tensors.values()}
    if kinds == {True}:
        return "pt"
    if kinds == {False}:
        return "np"
    return None


def check_metadata(metadata: Optional[Mapping[str, str]]) -> Dict[str, str]:
    if metadata is None:
        return {}
    out = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {v!r}")
        out[k] = v
    return out


def resolve_framework(framework: Optional[str], metadata: Mapping[str, str]) -> str:
    """"numpy" or "torch": as asked, else as the file says it was saved."""
    if framework is None:
        return "torch" if metadata.get("format") == "pt" else "numpy"
    aliases = {"numpy": "numpy", "np": "numpy", "torch": "torch", "pt": "torch"}
    if framework not in aliases:
        raise ValueError(f"framework must be 'numpy' or 'torch', not {framework!r}")
    return aliases[framework]


Span = Tuple[str, str, List[int], int, int]


def build(table: Iterable[Span], buf: bytearray, framework: str) -> Dict[str, Any]:
    """Arrays or tensors viewing ``buf`` at the places ``table`` gives."""
    if framework == "torch":
        return {name: torch_view(buf, dtype, shape, start, end) for name, dtype, shape, start, end in table}
    return {name: numpy_view(buf, dtype, shape, start, end) for name, dtype, shape, start, end in table}


def numpy_view(buf: bytearray, dtype: str, shape: List[int], start: int, end: int) -> np.ndarray:
    dt = numpy_dtype(dtype)
    count = (end - start) // dt.itemsize
    arr = np.frombuffer(buf, dtype=dt, count=count, offset=start).reshape(shape)
    # safetensors files written by lmc or the reference writer keep tensors
    # aligned; a file that does not gets aligned copies.
    return arr if start % dt.itemsize == 0 else arr.copy()


def torch_view(buf: bytearray, dtype: str, shape: List[int], start: int, end: int) -> Any:
    import torch

    attr = _TORCH_NAMES.get(dtype)
    tdt = getattr(torch, attr, None) if attr else None
    if tdt is None:
        raise LmcError(f"dtype {dtype} has no torch equivalent in this torch version")
    if end == start:
        return torch.empty(shape, dtype=tdt)
    raw = torch.frombuffer(buf, dtype=torch.uint8, count=end - start, offset=start)
    t = raw.view(tdt).reshape(shape)
    return t if start % t.element_size() == 0 else t.clone()
