"""A bounded memory store: static-size slots, so time and memory per frame stay flat on endless streams.

Slot 0 holds the first (prompted) frame for ever. Slots 1..``cap`` are a ring buffer of the most recent
memory frames (a new one every ``every`` frames, written by the tracker only when its prediction is
confident). Keys and values live in buffers allocated once (``1×Ck×S·hw`` and ``1×Cv×S·hw``, S =
``memory_slots`` = 1 + cap) with a ``valid`` mask (``1×S·hw`` bool) marking the filled slots, so an engine
with fixed shapes (ONNX) can read all slots every frame; an engine with dynamic shapes reads only the filled
prefix (:meth:`view`).

Slots fill in order 0, 1, 2, ... and then the ring overwrites 1..cap, so the filled slots are always a
prefix; the positions' order does not matter to the attention readout.
"""
from __future__ import annotations


class MemoryStore:
    """``memory_slots``: the memory size, the project's one name for it (the first frame + the recent ring;
    the tracker's ``memory_slots``, the ONNX manifest's). ``cap`` is the ring alone (``memory_slots - 1``), the
    older spelling, used when ``memory_slots`` is not given."""

    def __init__(self, cap: int = 8, every: int = 5, *, memory_slots: int | None = None):
        if memory_slots is not None:
            if int(memory_slots) < 2:
                raise ValueError("memory_slots must be >= 2 (the first frame and at least one recent)")
            cap = int(memory_slots) - 1
        if cap < 1:
            raise ValueError("cap must be >= 1")
        if every < 1:
            raise ValueError("every must be >= 1")
        self.cap = int(cap)
        self.every = int(every)
        self.memory_slots = 1 + self.cap
        self.keys = self.vals = self.valid = None
        self.hw = 0
        self.slot_frame: list[int | None] = [None] * self.memory_slots
        self._next = 1
        self.writes = 0

    # -- state --------------------------------------------------------------------------------------------
    def allocate(self, engine, key, val) -> None:
        """Allocate the buffers for keys shaped like ``key`` (1×Ck×h×w) and values like ``val`` (1×Cv×h×w)."""
        _, ck, h, w = tuple(key.shape)
        cv = tuple(val.shape)[1]
        if tuple(val.shape)[2:] != (h, w):
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(val.shape)} grids differ")
        self.hw = h * w
        n = self.memory_slots * self.hw
        self.keys = engine.zeros((1, ck, n))
        self.vals = engine.zeros((1, cv, n))
        self.valid = engine.zeros((1, n), dtype="bool")
        self.slot_frame = [None] * self.memory_slots
        self._next = 1
        self.writes = 0

    @property
    def slots(self) -> int:
        """The old name of :attr:`memory_slots`."""
        return self.memory_slots

    @property
    def allocated(self) -> bool:
        return self.keys is not None

    @property
    def n_filled(self) -> int:
        return sum(f is not None for f in self.slot_frame)

    @property
    def frames(self) -> list[int]:
        """Frame indices held, slot order."""
        return [f for f in self.slot_frame if f is not None]

    @property
    def last_frame(self) -> int | None:
        fs = self.frames
        return max(fs) if fs else None

    def nbytes(self) -> int:
        total = 0
        for buf in (self.keys, self.vals, self.valid):
            if buf is None:
                continue
            if hasattr(buf, "nbytes"):
                total += int(buf.nbytes)
            else:  # torch tensor
                total += int(buf.element_size() * buf.nelement())
        return total

    def clear(self) -> None:
        self.keys = self.vals = self.valid = None
        self.hw = 0
        self.slot_frame = [None] * self.memory_slots
        self._next = 1
        self.writes = 0

    # -- writes -------------------------------------------------------------------------------------------
    def _write(self, slot: int, key, val, frame_index: int) -> None:
        a, b = slot * self.hw, (slot + 1) * self.hw
        self.keys[:, :, a:b] = key.reshape(key.shape[0], key.shape[1], -1)
        self.vals[:, :, a:b] = val.reshape(val.shape[0], val.shape[1], -1)
        self.valid[:, a:b] = True
        self.slot_frame[slot] = int(frame_index)
        self.writes += 1

    def set_first(self, key, val, frame_index: int = 0) -> None:
        self._write(0, key, val, frame_index)

    def add(self, key, val, frame_index: int) -> int:
        """Write a recent memory frame into the ring; returns the slot used."""
        slot = self._next
        self._write(slot, key, val, frame_index)
        self._next = 1 + (self._next % self.cap)
        return slot

    def due(self, frame_index: int) -> bool:
        """Whether ``frame_index`` is at least ``every`` frames after the newest memory frame."""
        last = self.last_frame
        return last is None or frame_index - last >= self.every

    # -- reads --------------------------------------------------------------------------------------------
    def view(self, static: bool = False):
        """(keys, values, valid): all slots with the valid mask if ``static``, else the filled prefix and None."""
        if not self.allocated:
            raise RuntimeError("memory store is empty")
        if static:
            return self.keys, self.vals, self.valid
        n = self.n_filled * self.hw
        return self.keys[:, :, :n], self.vals[:, :, :n], None
