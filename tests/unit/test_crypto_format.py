"""The encrypted object format (storage.crypto_format): sizes, sealing, and every kind of
tampering a reader must refuse, naming the object and the chunk."""

from __future__ import annotations

import os

import pytest

from pitrflow.errors import ObjectAuthError
from pitrflow.storage import crypto_format as fmt

KEY = os.urandom(32)
EPOCH = "0123456789abcdef"
C = fmt.CHUNK_SIZE


def sealed(data: bytes, name: str = "main/wal/seg", key: bytes = KEY) -> bytes:
    return fmt.seal_bytes(key, EPOCH, name, data)


def chunks_of(stored: bytes) -> list[bytes]:
    body = stored[fmt.HEADER_SIZE:]
    return [body[i:i + fmt.SEALED_CHUNK] for i in range(0, len(body), fmt.SEALED_CHUNK)]


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, C - 1, C, C + 1, 2 * C, 2 * C + 16,
                                  5 * C - 3])
def test_ciphertext_size_is_a_pure_function_of_the_plaintext_size(size: int) -> None:
    data = os.urandom(size)
    stored = sealed(data)
    assert len(stored) == fmt.ciphertext_size(size)
    assert fmt.plaintext_size(len(stored)) == size
    assert fmt.open_bytes(KEY, "main/wal/seg", stored) == data


def test_sizes_no_object_can_have_are_recognised() -> None:
    assert fmt.plaintext_size(fmt.HEADER_SIZE) is None  # a header alone
    assert fmt.plaintext_size(fmt.HEADER_SIZE + 15) is None  # less than one tag
    # a full chunk followed by a bare tag: an empty last chunk after a full one
    assert fmt.plaintext_size(fmt.HEADER_SIZE + fmt.SEALED_CHUNK + fmt.TAG_SIZE) is None
    assert fmt.listed_size(fmt.HEADER_SIZE + 3) < 0


def test_streaming_matches_sealing_at_once_whatever_the_write_sizes() -> None:
    data = os.urandom(3 * C + 77)
    cipher = fmt.ObjectCipher(KEY, fmt.new_header(EPOCH), "k")
    sealer = fmt.ChunkSealer(cipher)
    assert sealer.update(b"") == [cipher.encoded_header]  # an empty write: the header only
    out = cipher.encoded_header
    pieces, pos = [], 0
    for step in (1, C - 1, 1, C, 1000, len(data)):
        pieces.append(data[pos:pos + step])
        pos += step
    for piece in pieces:
        out += b"".join(sealer.update(piece))
    out += b"".join(sealer.finish())
    assert fmt.open_bytes(KEY, "k", out) == data
    opener = fmt.ChunkOpener(fmt.ObjectCipher(KEY, fmt.parse_header(out, "k"), "k"))
    plain = b"".join(b"".join(opener.update(out[i:i + 1000]))
                     for i in range(fmt.HEADER_SIZE, len(out), 1000))
    assert plain + opener.finish() == data


def test_ranges_open_on_their_own() -> None:
    data = os.urandom(4 * C + 10)
    stored = sealed(data, "b")
    cipher = fmt.ObjectCipher(KEY, fmt.parse_header(stored, "b"), "b")
    for first, last in ((0, 0), (1, 2), (3, 4), (4, 4), (2, 3)):
        piece = stored[fmt.chunk_offset(first):fmt.chunk_offset(last + 1)]
        assert fmt.open_chunks(cipher, first, piece) == data[first * C:(last + 1) * C]
    assert fmt.chunk_span(C - 1, 2) == (0, 1)
    assert fmt.chunk_span(C, C) == (1, 1)


def test_a_flipped_byte_anywhere_is_refused_naming_the_object() -> None:
    data = os.urandom(2 * C + 5)
    stored = sealed(data, "main/backups/b1/base.tar.zst")
    for position in (fmt.HEADER_SIZE + 10, fmt.HEADER_SIZE + C + 3, len(stored) - 1,
                     fmt.HEADER_SIZE - 1, 20):
        damaged = bytearray(stored)
        damaged[position] ^= 1
        with pytest.raises(ObjectAuthError, match="object main/backups/b1/base.tar.zst"):
            fmt.open_bytes(KEY, "main/backups/b1/base.tar.zst", bytes(damaged))


def test_another_objects_bytes_under_this_name_are_refused() -> None:
    stored = sealed(b"segment 2", "main/wal/00000001/000000010000000000000002-aa.zst")
    with pytest.raises(ObjectAuthError, match=r"000000010000000000000003-bb\.zst fails "
                                              "authentication at chunk 0"):
        fmt.open_bytes(KEY, "main/wal/00000001/000000010000000000000003-bb.zst", stored)


def test_reordered_truncated_or_extended_objects_are_refused() -> None:
    data = os.urandom(3 * C + 100)
    stored = sealed(data)
    head, parts = stored[:fmt.HEADER_SIZE], chunks_of(stored)
    swapped = head + parts[1] + parts[0] + parts[2] + parts[3]
    with pytest.raises(ObjectAuthError, match="chunk 0"):
        fmt.open_bytes(KEY, "main/wal/seg", swapped)
    # Cut at a chunk boundary: the last chunk left was not sealed as the last one.
    with pytest.raises(ObjectAuthError, match="chunk 2"):
        fmt.open_bytes(KEY, "main/wal/seg", head + b"".join(parts[:3]))
    with pytest.raises(ObjectAuthError, match="chunk 3"):
        fmt.open_bytes(KEY, "main/wal/seg", stored[:-10])
    with pytest.raises(ObjectAuthError):
        fmt.open_bytes(KEY, "main/wal/seg", stored + parts[1])
    with pytest.raises(ObjectAuthError, match="shorter than an encryption header"):
        fmt.open_bytes(KEY, "main/wal/seg", stored[:30])


def test_the_wrong_data_key_is_refused() -> None:
    with pytest.raises(ObjectAuthError):
        fmt.open_bytes(os.urandom(32), "main/wal/seg", sealed(b"x"))


def test_a_header_this_version_cannot_read_is_refused() -> None:
    stored = bytearray(sealed(b"x"))
    stored[8] = 2  # format version
    with pytest.raises(ObjectAuthError, match="format 2"):
        fmt.parse_header(bytes(stored), "k")
    assert not fmt.is_encrypted(b"\x28\xb5\x2f\xfd zstd frame")


def test_every_write_of_a_name_gets_its_own_key() -> None:
    # Same name, same data, same data key: different salts, so nothing repeats.
    a, b = sealed(b"same bytes", "k"), sealed(b"same bytes", "k")
    assert a[:24] == b[:24] and a[24:] != b[24:]
