"""Arrays in memory that the engine's worker processes map too, and the pickling that passes them by reference."""
from __future__ import annotations

import importlib
import io
import math
import mmap
import os
import pickle
import sys
from types import ModuleType

import numpy as np

# New memory comes in segments of at least this size; only the pages written are ever allocated.
SEGMENT_BYTES = 64 << 20
PAGE = 4096


class Arena:
    """A caching allocator over memfd segments: a block serves the next array of its size once nothing uses it."""

    def __init__(self):
        self.segments: list[tuple[int, mmap.mmap, int, int]] = []  # (fd, map, address, size)
        self.blocks: dict[int, list[np.ndarray]] = {}  # block bytes -> every block of that size, as uint8 arrays
        self.top = 0  # the first unused byte of the last segment

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised array in shared memory; its block is free again once it and its views are gone."""
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        want = math.prod(shape) * dtype.itemsize
        size = max(PAGE, -(-want // PAGE) * PAGE)  # blocks page-aligned, so every array is aligned
        return self._block(size)[:want].view(dtype).reshape(shape)

    def _block(self, size: int) -> np.ndarray:
        """A free block of `size` bytes (or one up to twice as large), else a new one."""
        # Every array handed out is a view of its block, so a block no array uses is referenced only by its list,
        # this loop and getrefcount: 3. Counting is cheaper than a finalizer per array (7 us an array, and an op's
        # every output of 64 KiB or more comes from here).
        for block in self.blocks.get(size, ()):
            if sys.getrefcount(block) == 3:
                return block
        for s in sorted(s for s in self.blocks if size < s <= 2 * size):
            for block in self.blocks[s]:
                if sys.getrefcount(block) == 3:
                    return block
        if not self.segments or self.top + size > self.segments[-1][3]:
            self._grow(max(SEGMENT_BYTES, size))
        block = np.frombuffer(self.segments[-1][1], dtype=np.uint8, count=size, offset=self.top)
        self.top += size
        self.blocks.setdefault(size, []).append(block)
        return block

    def _grow(self, size: int) -> None:
        fd = os.memfd_create("fwbench-engine", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
        address = np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__["data"][0]
        self.segments.append((fd, mm, address, size))
        self.top = 0

    def where(self, a: np.ndarray) -> tuple[int, int, int] | None:
        """(fd, segment size, offset) of an array whose memory is this arena's, else None."""
        address = a.__array_interface__["data"][0]
        for fd, _, start, size in self.segments:
            if start <= address < start + size:
                return fd, size, address - start
        return None

    def holds(self, a: np.ndarray) -> bool:
        """Whether a lies in this arena's memory (a worker process sees it, and what it writes there)."""
        return type(a) is np.ndarray and a.size > 0 and self.where(a) is not None

    def close(self) -> None:
        """Forget the segments; their memory goes once the last array in them is gone."""
        for fd, *_ in self.segments:
            os.close(fd)
        self.segments, self.blocks, self.top = [], {}, 0


def dumps(obj, arena: Arena | None) -> bytes:
    """obj pickled, its arrays in the arena by reference and modules by name; every other array by value."""
    buffer = io.BytesIO()
    _Pickler(buffer, arena).dump(obj)
    return buffer.getvalue()


class _Pickler(pickle.Pickler):
    def __init__(self, file, arena: Arena | None):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arena = arena

    # reducer_override, not persistent_id: it is not called for ints, tuples, lists and the like, which are most of
    # a job (its slices), and a job pickled in 100-170 us instead of 15-25.
    def reducer_override(self, obj):
        if type(obj) is np.ndarray and obj.size and self.arena is not None:
            where = self.arena.where(obj)
            if where is not None:
                return _mapped, (*where, obj.shape, obj.strides, obj.dtype.str)
        elif isinstance(obj, ModuleType):
            return importlib.import_module, (obj.__name__,)
        return NotImplemented


_mapper: Mapper | None = None  # the worker process's, for _mapped


def _mapped(fd: int, size: int, offset: int, shape, strides, dtype) -> np.ndarray:
    """In the worker process: the parent's array at offset in its segment fd."""
    return _mapper.array(fd, size, offset, shape, strides, dtype)


class Mapper:
    """The worker's side: maps the parent's segments as they are first referenced, and unpickles with them."""

    def __init__(self, parent: int):
        self.parent, self.maps = parent, {}

    def loads(self, data: bytes):
        global _mapper
        _mapper = self
        return pickle.loads(data)

    def array(self, fd: int, size: int, offset: int, shape, strides, dtype) -> np.ndarray:
        if fd not in self.maps or len(self.maps[fd]) != size:
            # The parent's memfd, through its open descriptor: the same pages, written by either side.
            with open(f"/proc/{self.parent}/fd/{fd}", "r+b") as f:
                self.maps[fd] = mmap.mmap(f.fileno(), size)
        return np.ndarray(shape, dtype=np.dtype(dtype), buffer=self.maps[fd], offset=offset, strides=strides)
