"""Type stubs of the native module (crates/lmc-py/src/lib.rs).

Tensors go in as ``(name, dtype, shape, data)``: a safetensors dtype name
(``"BF16"``, ``"F32"``...), the shape, and the little-endian C-order bytes.
Files come back as ``(metadata, table, buffer)``: the safetensors
``__metadata__``, ``(name, dtype, shape, start, end)`` for each tensor, and
one ``bytearray`` holding the whole decoded file.

Every ``path``, ``src``, ``dst`` and ``base`` of the file functions below
(not the ``store_*`` ones) may be a URL: ``s3://bucket/key``, ``gs://``,
``az://``, ``file:///abs/path``, and ``http(s)://`` for reading
(crates/lmc-remote; credentials and endpoints from the environment).
"""

from typing import Any, Dict, List, Optional, Tuple

__version__: str

class LmcError(Exception):
    """Every failure inside lmc, with lmc's message."""

TensorArg = Tuple[str, str, List[int], bytes]
Span = Tuple[str, str, List[int], int, int]
Loaded = Tuple[Dict[str, str], List[Span], bytearray]

def save_tensors(
    path: str,
    tensors: List[TensorArg],
    metadata: Optional[Dict[str, str]] = None,
    chunk_size: Optional[int] = None,
    sync: bool = False,
    best: bool = False,
) -> Dict[str, object]: ...
def load(path: str, base: Optional[str] = None) -> Loaded: ...
def read_metadata(path: str) -> Dict[str, str]: ...
def read_tensors(path: str, names: List[str], expected: Optional[List[Optional[int]]] = None) -> List[bytearray]: ...
def read_tensors_into(path: str, names: List[str], outs: List[Any]) -> None: ...

class Reader:
    """A .lmc file or URL opened by its header and index; each read reads
    and decodes only the chunks it needs."""

    def __init__(self, path: str) -> None: ...
    def tensors(self) -> List[Tuple[str, str, List[int], int]]: ...
    def metadata(self) -> Dict[str, str]: ...
    def read(self, name: str, start: int = 0, length: Optional[int] = None) -> bytearray: ...

def compress_file(
    src: str,
    dst: str,
    dtype: Optional[str] = None,
    base: Optional[str] = None,
    chunk_size: Optional[int] = None,
    sync: bool = False,
    best: bool = False,
    allow_pickle_calls: bool = False,
) -> Dict[str, object]: ...
def check_pickle(data: bytes, what: str, allow_pickle_calls: bool = False) -> None: ...
def decompress_file(src: str, dst: str, base: Optional[str] = None, sync: bool = False) -> int: ...
def verify(path: str, base: Optional[str] = None) -> Dict[str, object]: ...
def store_add(
    root: str,
    step: int,
    file_name: str,
    tensors: List[TensorArg],
    metadata: Optional[Dict[str, str]] = None,
    keyframe_every: Optional[int] = None,
    chunk_size: Optional[int] = None,
    timeout: Optional[float] = 0.0,
    defer: bool = False,
) -> Dict[str, object]: ...
def store_finish(root: Optional[str] = None) -> None: ...
class PendingAdd:
    def done(self) -> bool: ...
    def wait(self) -> Dict[str, object]: ...

def store_add_background(
    root: str,
    step: int,
    file_name: str,
    tensors: List[TensorArg],
    metadata: Optional[Dict[str, str]] = None,
    keyframe_every: Optional[int] = None,
    chunk_size: Optional[int] = None,
    timeout: Optional[float] = 0.0,
) -> PendingAdd: ...
def store_list(root: str) -> List[Dict[str, object]]: ...
def store_restore(root: str, step: Optional[int] = None) -> Tuple[int, Dict[str, str], List[Span], bytearray]: ...
def store_whole_file(root: str, step: Optional[int] = None) -> Optional[str]: ...
def store_restore_to(root: str, step: int, out: str, overwrite: bool = False) -> None: ...
def store_verify(root: str) -> Dict[str, object]: ...
def store_prune(
    root: str, keep_last: int, keep_every: Optional[int] = None, timeout: Optional[float] = 0.0
) -> Dict[str, object]: ...
def store_remove(root: str, step: int, timeout: Optional[float] = 0.0) -> Dict[str, object]: ...
def remote_get(url: str) -> Optional[bytes]: ...
def remote_put(url: str, data: bytes) -> None: ...
def remote_upload(path: str, url: str) -> None: ...
def remote_list(url: str) -> List[str]: ...
def remote_delete(url: str) -> None: ...
