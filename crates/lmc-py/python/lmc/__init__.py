"""lmc: lossless compression of LLM checkpoints.

Tensors are compressed with lmc's byte-grouped Huffman coder and checked
byte for byte on the way back. Files written here are the ``lmc`` command
line tool's files: ``save_file`` writes the ``.lmc`` container of a
safetensors file (``lmc decompress`` gives that safetensors file back), and
``load_file`` reads what ``lmc compress`` wrote.

- ``save_file`` / ``load_file``: dicts of NumPy arrays or torch tensors
  (bfloat16 and float8 included; NumPy gets them from ``ml_dtypes``).
- ``safe_open``: one tensor, or rows of one, at a time, as
  ``safetensors.safe_open`` reads them, decoding only what is asked for.
- ``compress_file`` / ``decompress_file`` / ``verify``: files on disk, as the CLI.
- ``SnapshotStore``: a training run's checkpoints, the newest stored whole
  and each older one as a delta against the one after it (the store of
  ``lmc snapshot``).
- ``lmc.torch``: a ``StorageWriter`` and ``StorageReader`` for PyTorch
  Distributed Checkpoint (``torch.distributed.checkpoint``).

Every path taken by ``save_file``, ``load_file``, ``load_metadata``,
``safe_open``, ``compress_file``, ``decompress_file`` and ``verify`` may be
a URL: ``s3://bucket/key``, ``gs://``, ``az://``, ``file:///abs/path``,
and ``http(s)://`` for reading. Objects are read in ranged requests (the
header and index first, then only the chunks needed) and written by
multipart upload, visible under the key only once complete; credentials
and endpoints come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``...; see the README, "Object storage").

The GIL is released while lmc compresses, decompresses or does file I/O,
and lmc codes chunks on all cores. Every failure inside lmc is raised as
``LmcError`` with lmc's message; arguments of the wrong type raise
``TypeError`` and bad argument values ``ValueError``, as usual in Python.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Union

from . import _lmc
from ._convert import (
    build as _build,
    numpy_view as _numpy_view,
    torch_view as _torch_view,
    check_metadata as _check_metadata,
    framework_of as _framework_of,
    resolve_framework as _resolve_framework,
    to_args as _to_args,
)
from ._lmc import LmcError

__version__: str = _lmc.__version__

__all__ = [
    "LmcError",
    "SnapshotStore",
    "AddHandle",
    "compress_file",
    "decompress_file",
    "finish_stores",
    "load_file",
    "load_metadata",
    "safe_open",
    "save_file",
    "verify",
]

PathLike = Union[str, "os.PathLike[str]"]


def finish_stores(path: Optional[PathLike] = None) -> None:
    """Wait for the re-encoding that deferred adds of this process
    (``SnapshotStore.add(..., defer=True)``, incremental DCP saves) left
    running on other threads: of the store at ``path``, or of every store.
    Raises the first error (the store is sound either way: what was not
    re-encoded stays whole, and the next writer tries again)."""
    _lmc.store_finish(_opt_path(path))


def _finish_at_exit() -> None:
    try:
        _lmc.store_finish(None)
    except LmcError as e:  # the store is sound; say why it is larger
        print(f"lmc: warning: {e}", file=sys.stderr)


atexit.register(_finish_at_exit)


def _path(p: PathLike) -> str:
    return os.fspath(p)


def _opt_path(p: Optional[PathLike]) -> Optional[str]:
    return None if p is None else os.fspath(p)


def _with_format(tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]]) -> Dict[str, str]:
    meta = _check_metadata(metadata)
    # The Hugging Face convention: "format": "pt" marks torch tensors, so
    # load_file and restore give back the kind of tensors that was saved.
    fmt = _framework_of(tensors)
    if fmt is not None and "format" not in meta:
        meta["format"] = fmt
    return meta


def save_file(
    tensors: Mapping[str, Any],
    path: PathLike,
    metadata: Optional[Mapping[str, str]] = None,
    *,
    chunk_size: Optional[int] = None,
    sync: bool = False,
    best: bool = False,
) -> Dict[str, Any]:
    """Compress a dict of tensors into the ``.lmc`` file ``path``.

    The file is the lmc container of the safetensors file holding
    ``tensors`` in the given order and ``metadata`` as its ``__metadata__``
    (``lmc decompress`` restores that safetensors file). ``"format": "pt"``
    (torch tensors) or ``"np"`` (NumPy arrays) is added to the metadata
    unless it has a ``"format"`` already.

    Args:
        tensors: names to NumPy arrays or torch tensors (any device; they are
            copied to the CPU). Supported dtypes: bool, (u)int8/16/32/64,
            float16/32/64, bfloat16, float8_e4m3fn and float8_e5m2.
        path: the file to write. It appears complete or not at all: it is
            written under a temporary name and renamed. A URL is uploaded
            as it is coded (every part but the first, which holds the
            header, goes up at once) and appears only once complete.
        metadata: str-to-str pairs stored in the safetensors header.
        chunk_size: original bytes per chunk (default 256 KiB).
        sync: flush the file to disk (fsync) before renaming it into place.
        best: the smallest file (``lmc compress --best``): same format,
            decoding several times slower.

    Returns:
        ``{"original_len", "compressed_len", "chunks", "original_hash"}``.

    Raises:
        LmcError: an unsupported dtype, or the file cannot be written.
    """
    args = _to_args(tensors)
    meta = _with_format(tensors, metadata)
    return _lmc.save_tensors(_path(path), args, meta, chunk_size, sync, best)


def load_file(
    path: PathLike,
    *,
    framework: Optional[str] = None,
    base: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Read the tensors of a ``.lmc`` file.

    Decodes the whole file straight into one buffer and checks the
    whole-file hash (a URL is read in ranged requests as it is decoded); a damaged file is refused with an error that names the
    damaged chunk (its checksum is checked then). The arrays share that
    buffer (no copy per tensor); they are writable.

    Args:
        path: a ``.lmc`` file from ``save_file`` or ``lmc compress`` (of a
            safetensors file, or of a raw array: then one tensor, ``"data"``).
        framework: ``"numpy"`` or ``"torch"``. By default, torch tensors if
            the file's metadata says ``"format": "pt"``, else NumPy arrays.
        base: for a delta container (``lmc compress --base``), its base: the
            original file or a full ``.lmc`` of it (a path or a URL).

    Returns:
        Names to arrays, in the file's order.

    Raises:
        LmcError: a missing, damaged or foreign file, or a wrong base.
    """
    meta, table, buf = _lmc.load(_path(path), _opt_path(base))
    return _build(table, buf, _resolve_framework(framework, meta))


_FRAMEWORKS = {"pt": "torch", "torch": "torch", "np": "numpy", "numpy": "numpy"}


class safe_open:
    """Read a ``.lmc`` file a tensor at a time, in the shape of
    ``safetensors.safe_open``::

        with lmc.safe_open("model.lmc", framework="pt") as f:
            names = f.keys()
            w = f.get_tensor("lm_head.weight")
            rows = f.get_slice("embed.weight")[1000:2000]

    Each read decodes only the chunks that hold what it asks for (a slice
    along the first dimension: the chunks of its rows), each checked
    against its checksum; the whole-file hash is not checked, since the
    whole file is not decoded (``verify`` does that). Opening reads the
    header and the index; each read then reads only the stored bytes of
    the chunks it decodes. ``path`` may be a URL (``s3://bucket/key``,
    ``gs://``, ``az://``, ``file://``, ``http(s)://``), read in ranged
    requests; credentials and endpoints come from the environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...; see the README,
    "Object storage").

    Args:
        path: a ``.lmc`` file or URL holding a safetensors file
            (``save_file``, ``lmc compress``); not a delta container
            (``load_file`` with ``base=`` reads those).
        framework: ``"pt"`` (torch tensors) or ``"np"`` (NumPy arrays).
        device: ``"cpu"`` only.

    Raises:
        LmcError: a missing, damaged or delta file, or a tensor it does not hold.
    """

    def __init__(self, path: PathLike, framework: str = "pt", device: str = "cpu") -> None:
        if framework not in _FRAMEWORKS:
            raise ValueError(f"framework must be one of {sorted(_FRAMEWORKS)}, not {framework!r}")
        if device != "cpu":
            raise ValueError(f"lmc.safe_open reads to the CPU only, not {device!r}")
        self._framework = _FRAMEWORKS[framework]
        self._reader = _lmc.Reader(_path(path))
        # name -> (dtype, shape, length in bytes)
        self._tensors = {name: (dtype, list(shape), n) for name, dtype, shape, n in self._reader.tensors()}

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._reader = None  # the compressed bytes go

    def _open(self) -> Any:
        if self._reader is None:
            raise LmcError("this lmc.safe_open was closed")
        return self._reader

    def keys(self) -> List[str]:
        """The tensors' names, in the file's order."""
        return list(self._tensors)

    def metadata(self) -> Dict[str, str]:
        """The safetensors ``__metadata__``."""
        return self._open().metadata()

    def _info(self, name: str) -> Any:
        if name not in self._tensors:
            raise LmcError(f"no tensor {name!r} in this file")
        return self._tensors[name]

    def _view(self, buf: bytearray, dtype: str, shape: List[int]) -> Any:
        view = _torch_view if self._framework == "torch" else _numpy_view
        return view(buf, dtype, shape, 0, len(buf))

    def get_tensor(self, name: str) -> Any:
        """The whole tensor ``name``, decoding only its chunks."""
        dtype, shape, _ = self._info(name)
        return self._view(self._open().read(name), dtype, shape)

    def get_slice(self, name: str) -> "_Slice":
        """The tensor ``name`` to be indexed: ``[a:b]`` (and ``[a:b, ...]``)
        decodes only the chunks of rows ``a`` to ``b``; other indexing
        decodes the whole tensor and indexes it."""
        dtype, shape, nbytes = self._info(name)
        return _Slice(self, name, dtype, shape, nbytes)


class _Slice:
    """A tensor of a ``safe_open`` file, read when indexed."""

    def __init__(self, f: safe_open, name: str, dtype: str, shape: List[int], nbytes: int) -> None:
        self._f, self._name, self._dtype, self._shape, self._nbytes = f, name, dtype, shape, nbytes

    def get_shape(self) -> List[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return self._dtype

    def __getitem__(self, index: Any) -> Any:
        parts = index if isinstance(index, tuple) else (index,)
        first = parts[0] if parts else slice(None)
        rest = parts[1:]
        if not self._shape or Ellipsis in parts or not isinstance(first, (int, slice)) or isinstance(first, bool):
            return self._f.get_tensor(self._name)[index]
        rows = self._shape[0]
        if isinstance(first, int):
            k = first + rows if first < 0 else first
            if not 0 <= k < rows:
                raise IndexError(f"index {first} is out of bounds for dimension 0 of size {rows}")
            start, stop, local = k, k + 1, 0
        else:
            start, stop, step = first.indices(rows)
            if step != 1:
                return self._f.get_tensor(self._name)[index]
            stop = max(stop, start)
            local = slice(None)
        row_bytes = self._nbytes // rows if rows else 0
        buf = self._f._open().read(self._name, start * row_bytes, (stop - start) * row_bytes)
        part = self._f._view(buf, self._dtype, [stop - start] + self._shape[1:])
        return part[(local,) + tuple(rest)]


def load_metadata(path: PathLike) -> Dict[str, str]:
    """The ``__metadata__`` of the safetensors file in a ``.lmc`` file.

    Decodes only the chunks of the file's header (from a URL, reads only
    the header, the index and those chunks).
    """
    return _lmc.read_metadata(_path(path))


def compress_file(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    base: Optional[PathLike] = None,
    dtype: Optional[str] = None,
    chunk_size: Optional[int] = None,
    sync: bool = False,
    best: bool = False,
    allow_pickle_calls: bool = False,
) -> Dict[str, Any]:
    """Compress a file as ``lmc compress`` does.

    Args:
        src: a checkpoint file (safetensors, PyTorch, NumPy), with ``dtype``
            a raw little-endian array, or a directory (one container of
            all its files, as ``lmc compress DIR``; ``decompress_file``
            restores it).
        dst: the ``.lmc`` file to write (default: ``src`` + ``".lmc"``);
            replaced if it exists, atomically. ``src``, ``dst`` and ``base``
            may be URLs: a source object is read whole into memory, as a
            file is; ``dst`` is uploaded as it is coded and appears once
            complete.
        base: compress as a delta against this file (the previous checkpoint,
            or a full ``.lmc`` of it); decoding will need it.
        dtype: the element type of a raw array (``"BF16"``, ``"F32"``...).
        chunk_size: original bytes per chunk (default 256 KiB).
        sync: flush the file to disk before renaming it into place.
        best: the smallest file (``lmc compress --best``): same format,
            decoding several times slower.
        allow_pickle_calls: store a PyTorch checkpoint whose pickles
            ``torch.load(weights_only=True)`` would refuse, or that lmc
            cannot check (refused by default, as by ``lmc compress``; lmc
            never runs a pickle).

    Returns:
        ``{"original_len", "compressed_len", "chunks", "original_hash"}``.
    """
    dst = os.fspath(src) + ".lmc" if dst is None else dst
    return _lmc.compress_file(
        _path(src), _path(dst), dtype, _opt_path(base), chunk_size, sync, best,
        allow_pickle_calls,
    )


def decompress_file(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    base: Optional[PathLike] = None,
    sync: bool = False,
) -> int:
    """Decompress a ``.lmc`` file as ``lmc decompress`` does.

    Args:
        src: the ``.lmc`` file.
        dst: the file to write (default: ``src`` without ``".lmc"``);
            replaced if it exists, atomically, and only once every checksum
            and the whole-file hash have matched. A container of a
            directory (``lmc compress DIR``) is restored as that directory,
            as ``lmc decompress`` does: every entry checked, links that
            would lead outside refused, moved into place when complete. An
            existing file or empty directory at ``dst`` is replaced; a
            directory with something in it never is.
        base: the base of a delta container.
        sync: flush the file to disk before renaming it into place.

    ``src``, ``dst`` and ``base`` may be URLs: an object is read in ranged
    requests as it is decoded, and a ``dst`` URL is uploaded as it is
    decoded and appears only once every checksum and the whole-file hash
    have matched (a failed decode aborts the upload). A directory's
    container is restored to a local directory only.

    Returns:
        The number of bytes written (for a directory, of its stream).
    """
    if dst is None:
        s = os.fspath(src)
        if not s.endswith(".lmc"):
            raise ValueError(f"{s} does not end in .lmc: give dst")
        dst = s[: -len(".lmc")]
    return _lmc.decompress_file(_path(src), _path(dst), _opt_path(base), sync)


def verify(path: PathLike, *, base: Optional[PathLike] = None) -> Dict[str, Any]:
    """Decode a ``.lmc`` file completely and check every checksum and the
    whole-file hash, writing nothing (``lmc verify``). ``path`` may be a
    URL, read in ranged requests as it is decoded.

    Returns:
        ``{"version", "original_len", "compressed_len", "original_hash",
        "tensors", "chunks", "delta"}``.

    Raises:
        LmcError: the file is damaged (the message names the chunk and
            offset), or the base is missing or wrong.
    """
    return _lmc.verify(_path(path), _opt_path(base))


class AddHandle:
    """An add at work in the background (``SnapshotStore.add(...,
    background=True)``): ``wait()`` returns the snapshot as ``list()``
    describes it, or raises the add's error; ``done()`` says whether it has
    finished."""

    def __init__(self, pending: Any, step: int) -> None:
        self._pending = pending
        self.step = step
        self._result: Optional[Dict[str, Any]] = None
        self._error: Optional[BaseException] = None
        self._waited = False
        # Whether the caller has seen the outcome (called wait()).
        self._seen = False

    def done(self) -> bool:
        return self._waited or self._pending.done()

    def _finish(self) -> None:
        if not self._waited:
            try:
                self._result = self._pending.wait()
            except BaseException as e:  # kept for the next wait()
                self._error = e
            self._waited = True
            self._pending = None

    def wait(self) -> Dict[str, Any]:
        """Wait for the add (without holding the GIL); again returns (or
        raises) the same."""
        self._finish()
        self._seen = True
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class SnapshotStore:
    """A training run's checkpoints in one directory: the newest stored
    whole, each older one as a delta against the one after it, so restoring
    the newest decodes one container and any other at most
    ``keyframe_every - 1`` deltas more.

    It is the store of ``lmc snapshot`` (``lmc snapshot list/restore/verify``
    work on it). Adding is crash-safe: a snapshot exists once its manifest
    is committed, and an interrupted ``add`` leaves the store as it was. The
    store is opened for each call. Readers (``list``, ``restore``,
    ``verify``) take no lock and work while another process adds or
    prunes; writers (``add``, ``prune``, ``remove``) take turns: one finding
    another at work fails at once, or waits up to ``timeout`` seconds.
    ``add(..., background=True)`` returns once the tensors are copied and
    codes the snapshot on another thread; this object's next ``add``,
    ``prune`` or ``remove`` waits for it first (one add in flight), and
    raises its error if it failed and its ``wait()`` was never called.

    Example::

        store = lmc.SnapshotStore("run.lmcstore")
        for step in range(0, 1000, 100):
            train(...)
            store.add(model.state_dict(), step)
        weights = store.restore(500)      # torch tensors, as saved
    """

    def __init__(
        self,
        path: PathLike,
        *,
        keyframe_every: Optional[int] = None,
        chunk_size: Optional[int] = None,
    ) -> None:
        """
        Args:
            path: the store's directory, or a prefix in object storage
                (``s3://bucket/prefix``, ``gs://``, ``az://``: the same
                store, its lock an object with a lease, its manifest
                committed by a conditional write); created by the first ``add``.
            keyframe_every: bound on the deltas a restore decodes, less one: a
                snapshot is kept whole where a chain would otherwise reach
                this many deltas (default 16 for a new store; an existing
                store keeps its own unless this is given).
            chunk_size: original bytes per chunk for new snapshots.
        """
        self.path = os.fspath(path)
        self.keyframe_every = keyframe_every
        self.chunk_size = chunk_size
        self._pending: Optional[AddHandle] = None

    def _settle(self) -> None:
        """Wait for this object's background add, if any. If it failed and
        nobody has called its ``wait()``, its error is raised here, so that
        a loop that never keeps the handles still hears of it."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending._finish()
            if pending._error is not None and not pending._seen:
                raise LmcError(
                    f"the background add of step {pending.step} failed: {pending._error}"
                ) from pending._error

    def __repr__(self) -> str:
        return f"SnapshotStore({self.path!r})"

    def add(
        self,
        state_dict: Mapping[str, Any],
        step: int,
        *,
        metadata: Optional[Mapping[str, str]] = None,
        file_name: str = "model.safetensors",
        timeout: Optional[float] = 0,
        background: bool = False,
        defer: bool = False,
    ) -> Any:
        """Add a flat dict of tensors (``model.state_dict()``) as the snapshot
        at ``step``, which must be after the last snapshot's.

        Stored whole as one safetensors file named ``file_name``; the
        previous snapshot is re-encoded as a delta against it (tensors with
        the same name, dtype and shape are XORed with it) unless its chain
        is at the bound.

        Args:
            timeout: how long to wait, in seconds, if another process is
                writing to the store: 0 (the default) fails at once, None
                waits as long as it takes.
            background: return an ``AddHandle`` as soon as the tensors are
                copied, and code and commit the snapshot on another thread
                while the caller goes on (training). Memory: the copy of
                the tensors (one snapshot) until the add ends, and while it
                runs the previous snapshot decoded (about one more).
            defer: return as soon as the new snapshot is committed, stored
                whole (about the time of ``lmc.save_file``), and re-encode
                the previous snapshot as a delta on another thread while
                the caller goes on. Until that ends the previous snapshot is
                whole (restorable, larger); the next writing call on the
                store in this process waits for it, ``lmc.finish_stores()``
                waits for it, and so does the interpreter's exit. If the
                process ends first, the next writer does the work.

        Returns:
            The snapshot as ``list()`` describes it; with ``background``, an
            ``AddHandle`` whose ``wait()`` returns it.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, not {step!r}")
        if background and defer:
            raise ValueError("background and defer are two ways to add; give one")
        self._settle()
        args = _to_args(state_dict)
        meta = _with_format(state_dict, metadata)
        if background:
            result = _lmc.store_add_background(
                self.path, step, file_name, args, meta, self.keyframe_every, self.chunk_size, timeout
            )
            self._pending = AddHandle(result, step)
            return self._pending
        return _lmc.store_add(
            self.path, step, file_name, args, meta, self.keyframe_every, self.chunk_size, timeout, defer
        )

    def restore(self, step: Optional[int] = None, *, framework: Optional[str] = None) -> Dict[str, Any]:
        """The tensors of the snapshot at ``step`` (default: the last one),
        decoded through its chain of deltas and checked against its hash.

        Args:
            framework: ``"numpy"`` or ``"torch"``; by default, what was added.
        """
        _, meta, table, buf = _lmc.store_restore(self.path, step)
        return _build(table, buf, _resolve_framework(framework, meta))

    def restore_to(self, step: int, out: PathLike, *, overwrite: bool = False) -> None:
        """Write the snapshot at ``step`` to ``out`` as the original file (or
        directory), byte for byte (``lmc snapshot restore``)."""
        _lmc.store_restore_to(self.path, step, _path(out), overwrite)

    def list(self) -> List[Dict[str, Any]]:
        """The snapshots, oldest first: ``{"step", "kind", "parent", "depth",
        "added", "original_len", "stored_len", "files"}`` each; each file
        ``{"path", "original_len", "stored_len", "delta", "sources"}``
        (``sources``: the other files of the snapshot its derived tensors
        take their source elements from, such as the fp32 master weights of
        BF16 weights)."""
        return _lmc.store_list(self.path)

    def steps(self) -> List[int]:
        """The steps of the snapshots, oldest first."""
        return [s["step"] for s in self.list()]

    def verify(self) -> Dict[str, Any]:
        """Decode every snapshot and check every hash: ``{"snapshots",
        "files", "bytes", "unreferenced"}``."""
        return _lmc.store_verify(self.path)

    def prune(
        self, keep_last: int, keep_every: Optional[int] = None, *, timeout: Optional[float] = 0
    ) -> Dict[str, Any]:
        """Remove old snapshots, keeping the last ``keep_last`` and those whose
        step is a multiple of ``keep_every``; kept deltas whose parent goes
        are re-encoded, so every chain stays whole. Returns ``{"removed",
        "rebuilt", "stored_before", "stored_after"}``. ``timeout`` as for
        ``add``."""
        self._settle()
        return _lmc.store_prune(self.path, keep_last, keep_every, timeout)

    def remove(self, step: int, *, timeout: Optional[float] = 0) -> Dict[str, Any]:
        """Remove the snapshot at ``step`` (``lmc snapshot remove``); the one
        coded against it is re-encoded. Returns what ``prune`` returns;
        ``timeout`` as for ``add``."""
        self._settle()
        return _lmc.store_remove(self.path, step, timeout)
