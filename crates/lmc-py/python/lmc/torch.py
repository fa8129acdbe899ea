"""PyTorch Distributed Checkpoint (DCP) storage backed by lmc.

``StorageWriter`` and ``StorageReader`` implement the storage interfaces of
``torch.distributed.checkpoint``, built like its ``FileSystemWriter`` and
``FileSystemReader``, so ``dcp.save``, ``dcp.async_save`` and ``dcp.load``
work unchanged::

    import torch.distributed.checkpoint as dcp
    import lmc.torch

    dcp.save(state_dict, storage_writer=lmc.torch.StorageWriter("ckpt/step-100"))
    dcp.load(state_dict, storage_reader=lmc.torch.StorageReader("ckpt/step-100"))

Each rank compresses what it writes in parallel with the others (and on
all of its cores) into its own ``.lmc`` files; the coordinator writes the
``.metadata`` file DCP expects: the pickled ``Metadata``, whose
``storage_data`` says for each item which file and tensor holds it.

A checkpoint directory::

    ckpt/step-100/
      .metadata                 pickled torch Metadata, replaced atomically
      __0_0.5f2c9a1e.lmc        rank 0's items: the .lmc container of a safetensors file
      __1_0.5f2c9a1e.lmc        rank 1's

Each ``.lmc`` file is an ordinary lmc container (``lmc info``, ``lmc verify``
and ``lmc decompress`` work on it). A tensor is named by its fully qualified
name, followed by ``@`` and its offsets when it is a shard that does not
start at the origin; non-tensor items (DCP pickles them) are U8 tensors.

Saving into a directory that holds a checkpoint already is crash-safe: new
files get new names, ``.metadata`` is replaced atomically once every rank
has written and synced its files, and only then are the old files removed.
A writer killed at any moment leaves the previous checkpoint loadable.

Incremental mode (``incremental=True``): the path is a run directory in
which the latest save is stored whole and each earlier one as a delta
against the same rank's next save, in one lmc snapshot store per rank
(``lmc snapshot`` works on them), so loading the latest decodes one
container per file::

    run/
      .metadata                     the latest save's Metadata
      saves/000000000300-step-300.metadata   each save's Metadata
      rank-00000/                   rank 0's snapshot store
      rank-00001/

``StorageReader(run)`` loads the latest save, ``StorageReader(run, step=200)``
an earlier one.

Object storage: the path may be a URL, ``s3://bucket/prefix`` (also
``gs://``, ``az://``; ``file:///abs/path`` is the local directory), with
credentials and endpoint from the environment as for ``lmc.load_file``.
The checkpoint's files are then objects under the prefix, in the same
order of commitment: each rank's files are uploaded whole (a multipart
upload, visible only once complete), then ``.metadata`` is written in one
request, and only then are the objects of the checkpoint it replaced
deleted; a writer killed at any moment leaves the previous checkpoint
loadable. The reader fetches ``.metadata``, then only the chunks of the
tensors asked for, in ranged requests. Incremental mode keeps each rank's
snapshot store under the prefix (``lmc.SnapshotStore`` on a URL: its lock
an object created only if absent, its manifest committed by a conditional
write).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
import re
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader as _StorageReader
from torch.distributed.checkpoint.storage import StorageWriter as _StorageWriter
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from . import _lmc
from ._convert import torch_bytes, torch_dtype_name
from ._lmc import LmcError

try:  # torch >= 2.4: lets dcp.async_save stage through the writer, as FileSystemWriter does.
    from torch.distributed.checkpoint.staging import BlockingAsyncStager as _Stager
except ImportError:  # pragma: no cover
    _Stager = object  # type: ignore[assignment,misc]

__all__ = ["StorageWriter", "StorageReader", "LmcStorageInfo"]

METADATA = ".metadata"
SAVES = "saves"
SUFFIX = ".lmc"
# Largest original size of one file a rank writes (several if it holds more):
# bounds the memory a save needs beyond the state dict itself.
DEFAULT_MAX_FILE_SIZE = 2 << 30
_FILE_RE = re.compile(r"^__\d+_\d+\.[0-9a-f]+\.lmc$")
_SAVE_RE = re.compile(r"^(\d+)-step-(\d+)\.metadata$")
# Temporary files of interrupted saves: metadata (see _write_atomic) and data files.
_TMP_RE = re.compile(r"^\.(.*\.metadata\.[0-9a-f]{8}\.tmp|__\d+_\d+\.[0-9a-f]+\.lmc\..*\.lmc-tmp)$")

PathLike = Union[str, "os.PathLike[str]"]
# A checkpoint's place: a local directory, or a URL (a str, no trailing slash).
Where = Union[Path, str]
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _where(path: Union[str, os.PathLike]) -> Where:
    """A local directory as a ``Path``; a URL as itself (``file://`` URLs
    name a local directory)."""
    text = os.fspath(path)
    if isinstance(text, str) and _URL_RE.match(text):
        if text.startswith("file://"):
            return Path(text[len("file://"):].removeprefix("localhost"))
        return text.rstrip("/")
    return Path(path)


def _join(base: Where, *names: str) -> Where:
    if isinstance(base, str):
        return "/".join([base, *names])
    return base.joinpath(*names)


def _exists(path: Where) -> bool:
    if isinstance(path, str):
        return _lmc.remote_get(path) is not None
    return path.exists()


def _put(path: Where, data: bytes, sync: bool) -> None:
    """Writes ``data`` whole or not at all: an atomic rename, or one PUT."""
    if isinstance(path, str):
        _lmc.remote_put(path, data)
    else:
        _write_atomic(path, data, sync)


def _names(path: Where) -> List[str]:
    """The names of the files (objects) directly in ``path``; none if it is not there."""
    if isinstance(path, str):
        return [k for k in _lmc.remote_list(path) if "/" not in k]
    try:
        with os.scandir(path) as entries:
            return [e.name for e in entries]
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class LmcStorageInfo:
    """Where one item of a checkpoint is: the storage data of ``Metadata``."""

    relative_path: str
    """The ``.lmc`` file (or, incremental, the rank's store) under the checkpoint directory."""
    name: str
    """The tensor's name in the file."""
    snapshot: Optional[int] = None
    """Incremental saves: the step of the snapshot in the rank's store."""
    length: int = 0
    """Original bytes of the item."""


@dataclass(frozen=True)
class _LocalPlanData:
    """What a rank tells the coordinator in its local plan."""

    rank: int
    last_snapshot: Optional[int]


@dataclass(frozen=True)
class _PlanData:
    """What the coordinator tells each rank in the global plan."""

    rank: int
    tag: str
    """Part of this save's file names, so they never replace the files of a committed checkpoint."""
    snapshot: Optional[int] = None
    """Incremental mode: the step of the snapshot each rank adds to its store."""


def _item_name(index: MetadataIndex) -> str:
    off = index.offset
    if off is None or all(o == 0 for o in off):
        return index.fqn
    return f"{index.fqn}@{','.join(str(o) for o in off)}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, sync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        _fsync_dir(path.parent)


def _rank_store(rank: int) -> str:
    return f"rank-{rank:05d}"


def _last_snapshot(store: Where) -> Optional[int]:
    if not _exists(_join(store, "manifest.json")):
        return None
    snaps = _lmc.store_list(str(store))
    return snaps[-1]["step"] if snaps else None


class StorageWriter(_StorageWriter, _Stager):  # type: ignore[misc]
    """Writes a DCP checkpoint as lmc-compressed files, one set per rank.

    Args:
        path: the checkpoint directory (created if needed); for
            ``incremental=True`` the run directory that holds every save.
        incremental: keep each save in a snapshot store per rank (see the
            module doc): the newest save whole, each older one as a delta
            against the same rank's next save.
        step: incremental mode: the label of the next save (e.g. the
            training step), by which ``StorageReader(path, step=...)`` finds
            it; set ``writer.step`` before each save. Default: a counter.
        keyframe_every: incremental mode: a restore decodes at most this
            many deltas less one (a save is kept whole where a chain would
            reach that many; default 16).
        defer: incremental mode: a save returns once this save is stored
            whole (about the time of a non-incremental save), and the
            previous save is re-encoded as a delta against it on another
            thread while training goes on (``SnapshotStore.add``'s
            ``defer``); the next save, ``lmc.finish_stores()`` and the
            interpreter's exit wait for that. False: the save does both.
        sync_files: fsync every file before the checkpoint is committed
            (as ``FileSystemWriter``; without it a power loss may lose it).
        max_file_size: a rank's items go in files of at most this many
            original bytes (default 2 GiB), compressed one after another, so
            a save needs at most about that much memory besides the state dict.
        chunk_size: original bytes per lmc chunk (default 256 KiB).
        cache_staged_state_dict: as ``FileSystemWriter``'s, for ``dcp.async_save``.
        allow_pickle_calls: save non-tensor items whose pickles
            ``torch.load(weights_only=True)`` would refuse (objects of your
            own classes, say); refused by default, as ``StorageReader``
            refuses to load them.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        incremental: bool = False,
        step: Optional[int] = None,
        keyframe_every: Optional[int] = None,
        defer: bool = True,
        sync_files: bool = True,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        chunk_size: Optional[int] = None,
        cache_staged_state_dict: bool = False,
        allow_pickle_calls: bool = False,
    ) -> None:
        _StorageWriter.__init__(self)
        if _Stager is not object:
            _Stager.__init__(self, cache_staged_state_dict=cache_staged_state_dict)
        self.path = _where(path)
        self.incremental = incremental
        self.step = step
        self.keyframe_every = keyframe_every
        self.defer = defer
        self.sync_files = sync_files
        self.max_file_size = max_file_size
        self.chunk_size = chunk_size
        self.allow_pickle_calls = allow_pickle_calls
        self.save_id = uuid.uuid4().hex
        self.rank: Optional[int] = None
        self.is_coordinator = False
        self.use_collectives = True
        self._plan_data: Optional[_PlanData] = None

    def __repr__(self) -> str:
        mode = ", incremental=True" if self.incremental else ""
        return f"lmc.torch.StorageWriter({str(self.path)!r}{mode})"

    # -- the StorageWriter interface ------------------------------------

    def reset(self, checkpoint_id: Union[str, os.PathLike, None] = None) -> None:
        if checkpoint_id:
            self.path = _where(checkpoint_id)
        self.save_id = uuid.uuid4().hex
        self._plan_data = None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)
        if self.incremental and not self.use_collectives:
            raise LmcError("incremental mode needs use_collectives=True: the ranks agree on each save's step")

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        if isinstance(self.path, Path):
            self.path.mkdir(parents=True, exist_ok=True)
        rank = self.rank if self.rank is not None else 0
        last = _last_snapshot(_join(self.path, _rank_store(rank))) if self.incremental else None
        if not self.use_collectives:
            # No coordinator: each rank names its own files (FileSystemWriter does the same).
            return dataclasses.replace(plan, storage_data=_PlanData(rank, uuid.uuid4().hex[:8]))
        return dataclasses.replace(plan, storage_data=_LocalPlanData(rank, last))

    def prepare_global_plan(self, plans: List[SavePlan]) -> List[SavePlan]:
        if plans and all(isinstance(p.storage_data, _PlanData) for p in plans):
            return plans
        tag = uuid.uuid4().hex[:8]
        snapshot = None
        if self.incremental:
            # Past every rank's last snapshot, even one left by a save that
            # was killed before it committed, so every rank can add it.
            lasts = [p.storage_data.last_snapshot for p in plans if isinstance(p.storage_data, _LocalPlanData)]
            lasts += [s for s, _ in _saves(self.path)]
            after = max((x for x in lasts if x is not None), default=None)
            if self.step is not None and (after is None or self.step > after):
                snapshot = int(self.step)
            else:
                snapshot = 0 if after is None else after + 1
        return [
            dataclasses.replace(plan, storage_data=_PlanData(i, tag, snapshot))
            for i, plan in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> "Future[List[WriteResult]]":
        data: _PlanData = plan.storage_data
        self._plan_data = data
        if self.incremental:
            results = self._write_snapshot(plan.items, planner, data)
        else:
            results = self._write_files(plan.items, planner, data)
        fut: Future = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: List[List[WriteResult]]) -> None:
        metadata.version = "1.0.0"
        storage_md = {}
        for wr_list in results:
            storage_md.update({wr.index: wr.storage_data for wr in wr_list})
        metadata.storage_data = storage_md
        metadata.storage_meta = self.storage_meta()
        blob = pickle.dumps(metadata)
        if self.incremental:
            data = self._plan_data
            snapshot = data.snapshot if data is not None else None
            label = self.step if self.step is not None else snapshot
            saves = _join(self.path, SAVES)
            if isinstance(saves, Path):
                saves.mkdir(exist_ok=True)
            _put(_join(saves, f"{snapshot:012d}-step-{label}{METADATA}"), blob, self.sync_files)
            _put(_join(self.path, METADATA), blob, self.sync_files)
            if isinstance(saves, Path) and isinstance(self.path, Path):
                _remove_temporaries(self.path, saves)
            return
        if not self.use_collectives and self.rank is not None:
            _put(_join(self.path, f"__{self.rank}{METADATA}"), blob, self.sync_files)
            keep_prefix = f"__{self.rank}_"
        else:
            _put(_join(self.path, METADATA), blob, self.sync_files)
            keep_prefix = "__"
        # The new checkpoint is committed: remove the files of the one it
        # replaced, and temporary files of interrupted saves.
        live = {info.relative_path for info in storage_md.values()}
        for name in _names(self.path):
            if _FILE_RE.match(name) and name.startswith(keep_prefix) and name not in live:
                if isinstance(self.path, str):
                    _lmc.remote_delete(_join(self.path, name))
                else:
                    _unlink(self.path / name)
        if self.use_collectives and isinstance(self.path, Path):
            # (Not without coordination: other ranks may be writing theirs now.)
            _remove_temporaries(self.path)

    def storage_meta(self) -> Optional[StorageMeta]:
        return StorageMeta(checkpoint_id=self.checkpoint_id, save_id=self.save_id)

    @property
    def checkpoint_id(self) -> Union[str, os.PathLike]:
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Union[str, os.PathLike]) -> bool:
        return _validate_path(checkpoint_id)

    # -- writing ---------------------------------------------------------

    def _resolve(self, items: Sequence[WriteItem], planner: SavePlanner) -> List[Tuple[WriteItem, Tuple[str, str, List[int], bytes]]]:
        out = []
        for item in items:
            name = _item_name(item.index)
            data = planner.resolve_data(item)
            if item.type == WriteItemType.BYTE_IO:
                raw = data.getvalue() if isinstance(data, io.BytesIO) else bytes(data)
                _lmc.check_pickle(raw, f"item {name}", self.allow_pickle_calls)
                out.append((item, (name, "U8", [len(raw)], raw)))
                continue
            t = data.detach()
            st = torch_dtype_name(t.dtype)
            if st is None:
                # A dtype lmc does not split into planes: stored as bytes;
                # the metadata keeps its dtype.
                raw = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                out.append((item, (name, "U8", [len(raw)], raw)))
            else:
                out.append((item, (name, st, list(t.shape), torch_bytes(t))))
        return out

    def _buckets(self, items: Sequence[WriteItem]) -> List[List[WriteItem]]:
        buckets: List[List[WriteItem]] = [[]]
        size = 0
        for item in items:
            n = _item_size(item)
            if buckets[-1] and size + n > self.max_file_size:
                buckets.append([])
                size = 0
            buckets[-1].append(item)
            size += n
        return buckets

    def _write_files(self, items: Sequence[WriteItem], planner: SavePlanner, data: _PlanData) -> List[WriteResult]:
        results = []
        for n, bucket in enumerate(self._buckets(items)):
            if not bucket:
                continue
            file_name = f"__{data.rank}_{n}.{data.tag}{SUFFIX}"
            resolved = self._resolve(bucket, planner)
            args = [arg for _, arg in resolved]
            meta = {"format": "pt", "lmc.dcp": "1"}
            if isinstance(self.path, str):
                # Uploaded as it is coded (a multipart upload completed at
                # the end): the object appears complete or not at all.
                _lmc.save_tensors(_join(self.path, file_name), args, meta, self.chunk_size, False)
            else:
                _lmc.save_tensors(str(self.path / file_name), args, meta, self.chunk_size, self.sync_files)
            del args
            for item, arg in resolved:
                results.append(
                    WriteResult(
                        index=item.index,
                        size_in_bytes=len(arg[3]),
                        storage_data=LmcStorageInfo(file_name, arg[0], None, len(arg[3])),
                    )
                )
            del resolved
        return results

    def _write_snapshot(self, items: Sequence[WriteItem], planner: SavePlanner, data: _PlanData) -> List[WriteResult]:
        store = _rank_store(data.rank)
        resolved = self._resolve(items, planner)
        _lmc.store_add(
            str(_join(self.path, store)),
            data.snapshot,
            "shard.safetensors",
            [arg for _, arg in resolved],
            {"format": "pt", "lmc.dcp": "1"},
            self.keyframe_every,
            self.chunk_size,
            0.0,
            self.defer,
        )
        return [
            WriteResult(
                index=item.index,
                size_in_bytes=len(arg[3]),
                storage_data=LmcStorageInfo(store, arg[0], data.snapshot, len(arg[3])),
            )
            for item, arg in resolved
        ]


class _MetadataUnpickler(pickle.Unpickler):
    """Reads a ``.metadata`` file, importing only what DCP's ``Metadata``
    is made of (as ``torch.load(weights_only=True)`` does for tensors): a
    hostile checkpoint cannot run code through it."""

    _NAMES = {
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
        ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"),
        ("lmc.torch", "LmcStorageInfo"),
        # How torch pickles a torch.layout: a lookup by name in a table.
        ("torch.serialization", "_get_layout"),
        # StorageMeta.checkpoint_id.
        ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
    }

    def __init__(self, f: Any, path: Where, allow: bool) -> None:
        super().__init__(f)
        self._path = path
        self._allow = allow

    def find_class(self, module: str, name: str) -> Any:
        if self._allow:
            return super().find_class(module, name)
        found = None
        # No dotted names: pickle would follow them from an allowed module
        # to anything it imports (os.system).
        if "." not in name:
            if (module, name) in self._NAMES:
                found = super().find_class(module, name)
            elif module == "torch.distributed.checkpoint.metadata":
                cls = getattr(torch.distributed.checkpoint.metadata, name, None)
                if isinstance(cls, type) and cls.__module__ == module:
                    found = cls
            elif module == "torch" and not name.startswith("_"):
                value = getattr(torch, name, None)
                if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
                    found = value
        if found is None:
            raise LmcError(
                f"{self._path}: names {module}.{name}, which a DCP checkpoint's metadata does not "
                "hold; refused (lmc never runs a pickle it cannot check; "
                "StorageReader(..., allow_pickle_calls=True) reads it anyway)"
            )
        return found


def _unlink(path: Union[str, Path]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_temporaries(*dirs: Path) -> None:
    """Removes what interrupted saves left in `dirs` (only the coordinator
    calls this, after its own save committed)."""
    for d in dirs:
        for entry in os.scandir(d):
            if _TMP_RE.match(entry.name):
                _unlink(entry.path)


def _item_size(item: WriteItem) -> int:
    if item.tensor_data is None:
        return 0
    n = 1
    for s in item.tensor_data.size:
        n *= s
    return n * torch._utils._element_size(item.tensor_data.properties.dtype)


def _validate_path(checkpoint_id: Union[str, os.PathLike]) -> bool:
    if isinstance(checkpoint_id, Path):
        return True
    if "://" in str(checkpoint_id):
        return str(checkpoint_id).split("://")[0].lower() in ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file")
    for p in Path(checkpoint_id).parents:
        if p.exists() and os.access(str(p), os.W_OK):
            return True
    return False


def _saves(run: Where) -> List[Tuple[int, int]]:
    """``(snapshot, step label)`` of each save of an incremental run, oldest first."""
    out = []
    for name in _names(_join(run, SAVES)):
        m = _SAVE_RE.match(name)
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return sorted(out)


def saved_steps(path: PathLike) -> List[int]:
    """The step labels of the saves of an incremental run, oldest first."""
    return [step for _, step in _saves(_where(path))]


class StorageReader(_StorageReader):
    """Reads a DCP checkpoint written by ``StorageWriter``.

    Args:
        path: the checkpoint directory (or incremental run directory).
        step: incremental runs: the save to load, by its step label
            (default: the latest save).
        allow_pickle_calls: hand DCP non-tensor items (and read a
            ``.metadata``) that ``torch.load(weights_only=True)`` would
            refuse; refused by default.

    Only the tensors asked for are decoded (each chunk's checksum checked),
    in parallel; an item that fills a whole, contiguous CPU tensor of its
    dtype (the usual case) is decoded straight into that tensor, without a
    copy. Loading into a different sharding than was saved works as with
    ``FileSystemReader``. Items whose target tensors share memory (tied
    weights) are copied one after the other, never decoded into the same
    memory at once.

    A load is not atomic (no more than DCP's own readers): one that fails
    part way (a damaged chunk, a missing file) may leave some of the target
    tensors already overwritten with the checkpoint's values and others
    not; load again, or from another checkpoint, before using them.

    The ``.lmc`` files (or stores) an item names in ``.metadata`` must be
    plain relative paths under the checkpoint directory: an absolute path
    or one with a ``..`` is refused before anything is opened.
    """

    def __init__(
        self, path: PathLike, *, step: Optional[int] = None, allow_pickle_calls: bool = False
    ) -> None:
        super().__init__()
        self.path = _where(path)
        self.step = step
        self.allow_pickle_calls = allow_pickle_calls
        self.storage_data: Dict[MetadataIndex, LmcStorageInfo] = {}
        self.metadata: Optional[Metadata] = None
        self.load_id = uuid.uuid4().hex
        self.rank: Optional[int] = None

    def __repr__(self) -> str:
        return f"lmc.torch.StorageReader({str(self.path)!r})"

    def reset(self, checkpoint_id: Union[str, os.PathLike, None] = None) -> None:
        self.storage_data = {}
        if checkpoint_id:
            self.path = _where(checkpoint_id)
        self.load_id = uuid.uuid4().hex

    def _metadata_path(self, rank: Optional[int]) -> Where:
        if self.step is not None:
            found = [s for s, label in _saves(self.path) if label == self.step]
            if not found:
                raise LmcError(
                    f"{self.path}: no save with step {self.step} (saved: {saved_steps(self.path)})"
                )
            return _join(self.path, SAVES, f"{found[-1]:012d}-step-{self.step}{METADATA}")
        if rank is not None and not _exists(_join(self.path, METADATA)):
            return _join(self.path, f"__{rank}{METADATA}")
        return _join(self.path, METADATA)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._metadata_path(kwargs.get("rank"))
        if isinstance(path, str):
            blob = _lmc.remote_get(path)
            if blob is None:
                raise LmcError(f"{path}: no checkpoint here (no {path.rsplit('/', 1)[-1]})")
            metadata = _MetadataUnpickler(io.BytesIO(blob), path, self.allow_pickle_calls).load()
        else:
            try:
                with open(path, "rb") as f:
                    metadata = _MetadataUnpickler(f, path, self.allow_pickle_calls).load()
            except FileNotFoundError as e:
                raise LmcError(f"{path}: no checkpoint here (no {path.name})") from e
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.metadata = metadata
        self.storage_data = metadata.storage_data
        self.rank = kwargs.get("rank")
        if self.storage_data is None:
            raise LmcError("the checkpoint's metadata has no storage data")

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: List[LoadPlan]) -> List[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> "Future[None]":
        per_file: Dict[Tuple[str, Optional[int]], List[ReadItem]] = {}
        for req in plan.items:
            info = self.storage_data[req.storage_index]
            _check_relative_path(info.relative_path, req.storage_index.fqn)
            per_file.setdefault((info.relative_path, info.snapshot), []).append(req)
        for (relative_path, snapshot), reqs in per_file.items():
            where = str(_join(self.path, relative_path))
            if snapshot is not None:
                # A save stored whole (the newest of an incremental run
                # always is) is a plain container: decoded in place too.
                whole = _lmc.store_whole_file(where, snapshot)
                if whole is not None:
                    where, snapshot = str(whole), None
            if snapshot is None:
                reqs = self._read_in_place(where, reqs, planner)
            names = sorted({self.storage_data[r.storage_index].name for r in reqs})
            expected: Dict[str, Optional[int]] = {}
            for r in reqs:
                if r.type != LoadItemType.BYTE_IO:
                    chunk, dtype = self._stored_chunk(r)
                    expected[self.storage_data[r.storage_index].name] = (
                        math.prod(chunk.sizes) * dtype.itemsize
                    )
            decoded = self._decode(where, snapshot, names, expected) if reqs else {}
            for req in reqs:
                raw = decoded[self.storage_data[req.storage_index].name]
                if req.type == LoadItemType.BYTE_IO:
                    # DCP's planner unpickles it with torch.load(weights_only=False).
                    raw = bytes(raw)
                    _lmc.check_pickle(
                        raw,
                        f"{relative_path}: item {req.storage_index.fqn}",
                        self.allow_pickle_calls,
                    )
                    planner.load_bytes(req, io.BytesIO(raw))
                    continue
                stored = self._stored_tensor(req, raw)
                source = _narrow(stored, req.storage_offsets, req.lengths)
                target = planner.resolve_tensor(req).detach()
                if target.size() != source.size():
                    raise LmcError(
                        f"{relative_path}: {req.storage_index.fqn} has shape {tuple(source.size())}, "
                        f"the load asks for {tuple(target.size())}"
                    )
                target.copy_(source)
                planner.commit_tensor(req, target)
        fut: Future = Future()
        fut.set_result(None)
        return fut

    @property
    def checkpoint_id(self) -> Union[str, os.PathLike]:
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Union[str, os.PathLike]) -> bool:
        return _validate_path(checkpoint_id)

    # -- reading ---------------------------------------------------------

    def _read_in_place(self, where: str, reqs: List[ReadItem], planner: LoadPlanner) -> List[ReadItem]:
        """Decodes the items that fill a whole, contiguous CPU tensor of
        their own dtype (the common case) straight into that tensor, in
        parallel with the GIL released, and commits them; returns the
        others, for the general path.

        Targets that share memory (tied weights: the same tensor, or views
        of one storage) would be decoded into the same bytes at once: of
        those whose bytes overlap, only the first (lowest address) is
        decoded in place, the others go to the general path (a copy each,
        one after the other)."""
        rest: List[ReadItem] = []
        direct: List[Tuple[ReadItem, torch.Tensor, Any]] = []
        # (start, end, position in reqs, req, target, buffer) of each candidate.
        candidates: List[Tuple[int, int, int, ReadItem, torch.Tensor, Any]] = []
        for i, req in enumerate(reqs):
            target = buffer = None
            if req.type != LoadItemType.BYTE_IO and not any(req.storage_offsets):
                chunk, dtype = self._stored_chunk(req)
                candidate = planner.resolve_tensor(req).detach()
                if (
                    tuple(chunk.sizes) == tuple(req.lengths) == tuple(candidate.size())
                    and candidate.dtype == dtype
                    and candidate.device.type == "cpu"
                    and candidate.is_contiguous()
                    and candidate.numel() > 0
                ):
                    try:
                        buffer = candidate.reshape(-1).view(torch.uint8).numpy()
                        target = candidate
                    except (RuntimeError, TypeError):
                        pass  # a dtype without a byte view (quantized): the general path
            if target is None:
                rest.append(req)
            else:
                size = target.element_size()
                start = target.untyped_storage().data_ptr() + target.storage_offset() * size
                candidates.append((start, start + target.numel() * size, i, req, target, buffer))
        # Sorted by start, a range overlaps one chosen before it exactly when
        # it starts before the furthest end chosen so far.
        candidates.sort(key=lambda c: (c[0], c[2]))
        end_so_far: Optional[int] = None
        shared: List[Tuple[int, ReadItem]] = []
        for start, end, i, req, target, buffer in candidates:
            if end_so_far is not None and start < end_so_far:
                shared.append((i, req))
            else:
                direct.append((req, target, buffer))
                end_so_far = end if end_so_far is None else max(end_so_far, end)
        if shared:
            # The general path, in the plan's order.
            positions = {id(req): i for i, req in enumerate(reqs)}
            rest = sorted(rest + [req for _, req in shared], key=lambda r: positions[id(r)])
        if direct:
            _lmc.read_tensors_into(
                where,
                [self.storage_data[req.storage_index].name for req, _, _ in direct],
                [buffer for _, _, buffer in direct],
            )
            for req, target, _ in direct:
                planner.commit_tensor(req, target)
        return rest

    def _decode(
        self,
        where: str,
        snapshot: Optional[int],
        names: List[str],
        expected: Dict[str, Optional[int]],
    ) -> Dict[str, Any]:
        if snapshot is None:
            sizes = [expected.get(n) for n in names]
            return dict(zip(names, _lmc.read_tensors(where, names, sizes)))
        _, _, table, buf = _lmc.store_restore(where, snapshot)
        spans = {name: (start, end) for name, _, _, start, end in table}
        missing = [n for n in names if n not in spans]
        if missing:
            raise LmcError(f"{where} snapshot {snapshot}: no tensor {missing[0]!r}")
        view = memoryview(buf)
        # A copy per tensor: aligned for any dtype, and the file's buffer can go.
        return {n: bytearray(view[spans[n][0] : spans[n][1]]) for n in names}

    def _stored_tensor(self, req: ReadItem, raw: Any) -> torch.Tensor:
        """The item as it was saved: its chunk of the tensor, with its dtype."""
        chunk, dtype = self._stored_chunk(req)
        if len(raw) == 0:
            return torch.empty(tuple(chunk.sizes), dtype=dtype)
        flat = torch.frombuffer(raw, dtype=torch.uint8)
        return flat.view(dtype).reshape(tuple(chunk.sizes))

    def _stored_chunk(self, req: ReadItem) -> Tuple[Any, torch.dtype]:
        """The metadata of the saved chunk an item reads from, and its dtype."""
        index = req.storage_index
        md = self.metadata.state_dict_metadata[index.fqn]  # type: ignore[union-attr]
        chunk = None
        if index.index is not None and index.index < len(md.chunks):
            chunk = md.chunks[index.index]
            if index.offset is not None and tuple(chunk.offsets) != tuple(index.offset):
                chunk = None
        if chunk is None:
            want = tuple(index.offset) if index.offset is not None else (0,) * len(md.size)
            chunk = next((c for c in md.chunks if tuple(c.offsets) == want), None)
        if chunk is None:
            raise LmcError(f"the checkpoint's metadata has no chunk of {index.fqn} at {index.offset}")
        return chunk, md.properties.dtype


def _check_relative_path(relative_path: Any, fqn: str) -> None:
    """Refuses a data file named in ``.metadata`` that is not a plain
    relative path under the checkpoint directory (absolute, ``..``): a
    hostile ``.metadata`` must not make the reader open other files."""
    if not isinstance(relative_path, str):
        raise LmcError(f"the checkpoint's metadata names for item {fqn} a data file that is not a path: {relative_path!r}")
    parts = relative_path.replace("\\", "/").split("/")
    if (
        not relative_path
        or "\0" in relative_path
        or PurePosixPath(relative_path).is_absolute()
        or PureWindowsPath(relative_path).is_absolute()
        or PureWindowsPath(relative_path).drive
        or ".." in parts
    ):
        raise LmcError(
            f"the checkpoint's metadata names for item {fqn} the data file {relative_path!r}, "
            "which is not a plain relative path under the checkpoint directory (absolute, or with ..)"
        )


def _narrow(tensor: torch.Tensor, offsets: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    """The part of a stored chunk a read asks for (``narrow_tensor_by_index``)."""
    out = tensor
    for dim, (offset, size) in enumerate(zip(offsets, sizes)):
        if size < tensor.size(dim):
            out = out.narrow(dim, offset, size)
    return out
