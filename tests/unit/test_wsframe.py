"""relay.wsframe (RFC 6455 §5), cross-checked with the `websockets` library's own frame codec."""

from __future__ import annotations

import struct

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from relay import wsframe
from relay.wsframe import FrameError, read_frame

MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame as `websockets` writes it."""
    return Frame(opcode, payload, fin).serialize(mask=True)


def parse_server(data: bytes) -> Frame:
    """`websockets`' reading of a server frame; also proves the frame is exactly `data` long."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        assert reader.at_eof(), "bytes left after the frame"
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


# Building server frames -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_lengths(length: int) -> None:
    payload = b"x" * length
    wire = wsframe.text_frame(payload)
    header = 2 if length < 126 else 4 if length < 65536 else 10
    assert len(wire) == header + length
    assert wire[0] == 0x81  # FIN + text, no RSV bits: never compressed
    assert wire[1] & 0x80 == 0  # servers never mask
    frame = parse_server(wire)
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, payload)


def test_close_frame() -> None:
    frame = parse_server(wsframe.close_frame(4001, "Application does not exist"))
    assert frame.opcode is Opcode.CLOSE
    assert Close.parse(frame.data) == Close(4001, "Application does not exist")


def test_close_reason_truncated_on_a_character_boundary() -> None:
    wire = wsframe.close_frame(4200, "é" * 100)  # 200 bytes of UTF-8
    frame = parse_server(wire)
    assert len(frame.data) <= 125
    close = Close.parse(frame.data)  # raises if the reason is not valid UTF-8
    assert close.code == 4200 and close.reason == "é" * 61


def test_empty_close_and_pong() -> None:
    assert wsframe.empty_close_frame() == b"\x88\x00"
    frame = parse_server(wsframe.pong_frame(b"abc"))
    assert (frame.opcode, frame.data) == (Opcode.PONG, b"abc")


# Reading client frames --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 5, 125, 126, 65535, 65536])
def test_read_masked_frame(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    wire = client_frame(Opcode.TEXT, payload)
    assert read_frame(wire, 0, 1 << 20) == (True, wsframe.OP_TEXT, payload, len(wire))


def test_read_frame_incomplete_at_every_cut() -> None:
    wire = client_frame(Opcode.TEXT, b"y" * 300)  # 16-bit extended length
    for cut in range(len(wire)):
        assert read_frame(wire[:cut], 0, 1 << 20) is None, cut
    big = client_frame(Opcode.BINARY, b"z" * 70_000)  # 64-bit extended length
    for cut in (0, 1, 2, 9, 10, 13, 14, len(big) - 1):
        assert read_frame(big[:cut], 0, 1 << 20) is None, cut


def test_read_frames_back_to_back_from_an_offset() -> None:
    first = client_frame(Opcode.TEXT, b"one")
    second = client_frame(Opcode.PING, b"p")
    third = client_frame(Opcode.CLOSE, struct.pack("!H", 1000))
    buffer = bytearray(b"junk" + first + second + third)
    fin, opcode, payload, end = read_frame(buffer, 4, 100) or (False, -1, b"", -1)
    assert (fin, opcode, payload) == (True, wsframe.OP_TEXT, b"one")
    fin, opcode, payload, end = read_frame(buffer, end, 100) or (False, -1, b"", -1)
    assert (opcode, payload) == (wsframe.OP_PING, b"p")
    fin, opcode, payload, end = read_frame(buffer, end, 100) or (False, -1, b"", -1)
    assert (opcode, payload, end) == (wsframe.OP_CLOSE, b"\x03\xe8", len(buffer))
    assert read_frame(buffer, end, 100) is None


def test_read_fragmented_message() -> None:
    start = client_frame(Opcode.TEXT, b"hel", fin=False)
    rest = client_frame(Opcode.CONT, b"lo", fin=True)
    assert read_frame(start, 0, 100) == (False, wsframe.OP_TEXT, b"hel", len(start))
    assert read_frame(rest, 0, 100) == (True, wsframe.OP_CONTINUATION, b"lo", len(rest))


def expect_error(wire: bytes, code: int, limit: int = 1 << 20) -> str:
    with pytest.raises(FrameError) as caught:
        read_frame(wire, 0, limit)
    assert caught.value.code == code
    return caught.value.reason


def test_unmasked_client_frame_is_a_protocol_error() -> None:
    assert "masked" in expect_error(b"\x81\x02hi", wsframe.PROTOCOL_ERROR)


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_reserved_bits_are_a_protocol_error(rsv: int) -> None:
    wire = bytearray(client_frame(Opcode.TEXT, b"hi"))
    wire[0] |= rsv
    assert "Reserved" in expect_error(bytes(wire), wsframe.PROTOCOL_ERROR)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcode_is_a_protocol_error(opcode: int) -> None:
    wire = bytes((0x80 | opcode, 0x80)) + MASK
    assert "opcode" in expect_error(wire, wsframe.PROTOCOL_ERROR)


def test_fragmented_control_frame_is_a_protocol_error() -> None:
    wire = bytes((wsframe.OP_PING, 0x80)) + MASK  # FIN clear
    assert "Fragmented" in expect_error(wire, wsframe.PROTOCOL_ERROR)


def test_long_control_frame_is_a_protocol_error() -> None:
    wire = bytes((0x80 | wsframe.OP_PING, 0x80 | 126)) + struct.pack("!H", 126) + MASK + b"p" * 126
    assert "Control frame" in expect_error(wire, wsframe.PROTOCOL_ERROR)


def test_oversize_frame_refused_from_its_header_alone() -> None:
    wire = client_frame(Opcode.TEXT, b"x" * 2000)
    header_only = wire[:8]  # 2 + 2 (length) + 4 (mask): no payload yet
    assert "1000" in expect_error(header_only, wsframe.MESSAGE_TOO_BIG, limit=1000)
    assert read_frame(client_frame(Opcode.TEXT, b"x" * 1000), 0, 1000) is not None
    # A 64-bit length claiming petabytes is refused the same way, before any buffering.
    huge = bytes((0x81, 0x80 | 127)) + struct.pack("!Q", 1 << 50)
    expect_error(huge, wsframe.MESSAGE_TOO_BIG, limit=1000)


def test_unmask_round_trip() -> None:
    payload = b"The quick brown fox" * 3
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    assert wsframe.unmask(masked, MASK) == payload
    assert wsframe.unmask(b"", MASK) == b""


@pytest.mark.parametrize(
    ("code", "valid"),
    [(1000, True), (1001, True), (1003, True), (1004, False), (1005, False), (1006, False), (1007, True),
     (1014, True), (1015, False), (2999, False), (3000, True), (4201, True), (4999, True), (5000, False), (0, False)],
)  # fmt: skip
def test_valid_close_codes(code: int, valid: bool) -> None:
    assert wsframe.is_valid_close_code(code) is valid
