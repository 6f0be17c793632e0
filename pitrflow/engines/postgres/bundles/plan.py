"""Bundle planning: which object and which frames each tar member goes to (pure).

Small members (a file up to one frame, a directory, a symlink) are packed
into bundles, one frame each, until a bundle holds `bundle_size` raw bytes:
one ranged read then fetches one file.  A larger file gets an object of its
own, cut into `frame_size` chunks; its first frame also holds its header and
its last one the tar padding, so every object decompresses to whole tar
members.  A bundle stays open across large files, so large files do not
leave a trail of tiny bundles behind them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pitrflow.engines.postgres.bundles.tarparse import padding_of


@dataclass(frozen=True)
class Cut:
    """One frame: `data_length` bytes of the member's data from `data_offset`."""

    data_offset: int
    data_length: int
    with_header: bool
    with_padding: bool
    raw_offset: int  # where the frame's bytes start in the object's tar stream
    raw_length: int


@dataclass(frozen=True)
class Placement:
    object: str
    kind: str  # "bundle" | "file"
    cuts: tuple[Cut, ...]
    # Objects complete once this member is written (the end-of-archive frame goes next).
    closes: tuple[str, ...] = ()


def object_name(kind: str, number: int) -> str:
    return f"{kind}-{number:06d}.tar.zst"


@dataclass
class BundlePlanner:
    frame_size: int
    bundle_size: int
    _count: int = 0
    _bundle: str | None = None
    _bundle_raw: int = 0
    open_objects: list[str] = field(default_factory=list)

    def _new(self, kind: str) -> str:
        self._count += 1
        name = object_name(kind, self._count)
        self.open_objects.append(name)
        return name

    def place(self, header_len: int, size: int) -> Placement:
        if size <= self.frame_size:
            return self._small(header_len, size)
        return self._large(header_len, size)

    def _small(self, header_len: int, size: int) -> Placement:
        if self._bundle is None:
            self._bundle, self._bundle_raw = self._new("bundle"), 0
        raw = header_len + size + padding_of(size)
        cut = Cut(0, size, True, True, self._bundle_raw, raw)
        name = self._bundle
        self._bundle_raw += raw
        closes: tuple[str, ...] = ()
        if self._bundle_raw >= self.bundle_size:
            closes = (name,)
            self.open_objects.remove(name)
            self._bundle = None
        return Placement(name, "bundle", (cut,), closes)

    def _large(self, header_len: int, size: int) -> Placement:
        name = self._new("file")
        cuts: list[Cut] = []
        offset, raw_offset = 0, 0
        while offset < size:
            length = min(self.frame_size, size - offset)
            first, last = offset == 0, offset + length == size
            raw = (header_len if first else 0) + length + (padding_of(size) if last else 0)
            cuts.append(Cut(offset, length, first, last, raw_offset, raw))
            offset += length
            raw_offset += raw
        self.open_objects.remove(name)
        return Placement(name, "file", tuple(cuts), (name,))

    def finish(self) -> tuple[str, ...]:
        """Objects still open at the end of the stream (the last bundle)."""
        left = tuple(self.open_objects)
        self.open_objects.clear()
        self._bundle = None
        return left
