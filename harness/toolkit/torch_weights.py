"""Read a PyTorch weights file (``.pth``) as numpy arrays, never running what the file asks to run.

A ``.pth`` file is a pickle, and unpickling can call any function the file names. With PyTorch
installed, ``torch.load(weights_only=True)`` refuses everything but tensors. Without it, a
restricted reader does the same: its unpickler resolves only the names a state dict of tensors
needs (an ``OrderedDict``, the tensor rebuild function, the storage types) and refuses any other,
so ``os.system`` or any other callable in a tampered file is never reached. Both the zip format
(PyTorch ≥ 1.6) and the legacy one (a sequence of pickles followed by raw storages) are read.
"""

from __future__ import annotations

import collections
import io
import pickle  # only through RestrictedUnpickler below: find_class refuses every non-tensor name
import zipfile
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

#: PyTorch's storage type names and the numpy dtype of their elements.
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class UnsafeWeightsError(HarnessError):
    """A weights file holds something other than tensors."""


def _refused(path: Path, what: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"weights file {path} holds {what}, not only tensors: refused (loading it could run code). "
        "Reinstall the package that provides it, or use a weights file from a source you trust."
    )


class _Storage:
    """A storage the pickle refers to by key; its bytes are filled in after the pickle is read."""

    def __init__(self, dtype, numel: int):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array: np.ndarray | None = None


class _Tensor:
    """A view into a storage, made into an array once the storages are read."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError("a tensor refers to a storage the file does not hold")
        if not self.size:
            return flat[self.offset].copy()
        itemsize = flat.itemsize
        return np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride], writeable=False
        ).copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *_):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    return data


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows a state dict of tensors and nothing else."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    }

    def __init__(self, file, path: Path, storages: dict):
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str):
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise _refused(self._path, f"a reference to {module}.{name}")
        return found

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy: the same plus view metadata.
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise _refused(self._path, f"an unknown persistent object {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise _refused(self._path, f"a storage of unknown type {storage_type!r:.80}")
        if key not in self._storages:
            self._storages[key] = _Storage(STORAGE_DTYPES[storage_type.name], numel)
        return self._storages[key]


def _unpickle(data, path: Path, storages: dict):
    return RestrictedUnpickler(data, path, storages).load()


def read_state_dict_restricted(path: str | Path) -> dict[str, np.ndarray]:
    """A ``.pth`` state dict as numpy arrays, read without PyTorch and without unrestricted unpickling."""
    path = Path(path)
    storages: dict[str, _Storage] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                pickle_name = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if pickle_name is None:
                    raise ValueError("no data.pkl in the archive")
                prefix = pickle_name[: -len("data.pkl")]
                state = _unpickle(io.BytesIO(archive.read(pickle_name)), path, storages)
                for key, storage in storages.items():
                    raw = archive.read(f"{prefix}data/{key}")
                    storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=storage.numel)
        else:
            with open(path, "rb") as file:
                if _unpickle(file, path, {}) != _LEGACY_MAGIC:
                    raise ValueError("not a PyTorch file (wrong magic number)")
                _unpickle(file, path, {})  # protocol version
                _unpickle(file, path, {})  # system info: endianness and type sizes
                state = _unpickle(file, path, storages)
                keys = _unpickle(file, path, {})
                for key in keys:
                    storage = storages[str(key)]
                    numel = int(np.frombuffer(file.read(8), dtype="<i8")[0])
                    raw = file.read(numel * storage.dtype.itemsize)
                    if len(raw) != numel * storage.dtype.itemsize:
                        raise ValueError("the file ends inside a storage")
                    storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=numel)
        return _arrays(state, path)
    except UnsafeWeightsError:
        raise
    except (OSError, ValueError, KeyError, IndexError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"weights file {path} is not a readable PyTorch state dict ({exc}).") from None


def _arrays(state, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise _refused(path, f"a {type(state).__name__} instead of a state dict")
    arrays = {}
    for name, value in state.items():
        if not isinstance(value, _Tensor):
            raise _refused(path, f"a {type(value).__name__} under '{name}'")
        arrays[str(name)] = value.to_numpy()
    return arrays


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A ``.pth`` state dict as numpy arrays: ``torch.load(weights_only=True)`` when PyTorch is
    installed, the restricted reader otherwise. Anything but tensors is refused
    (``UnsafeWeightsError``); an unreadable file is a ``HarnessError``."""
    path = Path(path)
    try:
        import torch
    except ImportError:
        return read_state_dict_restricted(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "Unsupported global" in line or "GLOBAL" in line), first[0] if first else "")
        raise _refused(path, f"an object PyTorch's weights_only loader refuses ({detail.strip()[:160]})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise HarnessError(f"weights file {path} is not a readable PyTorch state dict ({exc}).") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _refused(path, "something other than a state dict of tensors")
    return {str(name): value.detach().cpu().numpy() for name, value in state.items()}
