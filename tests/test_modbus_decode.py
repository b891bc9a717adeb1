"""Register decoding and request planning, table-driven against known bytes."""

from __future__ import annotations

import struct

import pytest

from collectors.modbus import decode_register, plan_reads, raw_value, words_to_bytes
from eqmon.config import Register

# Big-endian bytes of each value; the words a device sends follow from the byte/word order.
CASES = [
    ("int16", -1234, struct.pack(">h", -1234)),
    ("uint16", 65000, struct.pack(">H", 65000)),
    ("int32", -123456789, struct.pack(">i", -123456789)),
    ("uint32", 4000000000, struct.pack(">I", 4000000000)),
    ("int64", -1234567890123456789, struct.pack(">q", -1234567890123456789)),
    ("uint64", 18000000000000000000, struct.pack(">Q", 18000000000000000000)),
    ("float32", 1.5, struct.pack(">f", 1.5)),
    ("float64", -273.15, struct.pack(">d", -273.15)),
]


def device_words(be: bytes, order: str) -> list[int]:
    """What a device with this byte/word order puts in its registers for big-endian ``be``."""
    words = [int.from_bytes(be[i : i + 2], "big") for i in range(0, len(be), 2)]
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    return words


@pytest.mark.parametrize("order", ["ABCD", "DCBA", "BADC", "CDAB"])
@pytest.mark.parametrize(("data_type", "value", "be"), CASES)
@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (0.1, 0.0), (0.01, -40.0)])
def test_decode_every_type_order_and_scale(
    data_type: str, value: float, be: bytes, order: str, scale: float, offset: float
) -> None:
    reg = Register(name="x", address=0, data_type=data_type, order=order, scale=scale, offset=offset)  # type: ignore[arg-type]
    words = device_words(be, order)
    assert len(words) == reg.words
    got = decode_register(reg, words)
    expected = value * scale + offset if (scale, offset) != (1.0, 0.0) else value
    if "float" in data_type:
        assert got == pytest.approx(expected, rel=1e-6)
    elif (scale, offset) != (1.0, 0.0):
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-9)
    else:
        assert got == expected


def test_known_word_orders_of_a_float() -> None:
    # 1.5 as float32 is 3F C0 00 00 (A B C D).
    assert words_to_bytes([0x3FC0, 0x0000], "ABCD") == bytes.fromhex("3FC00000")
    assert words_to_bytes([0x0000, 0x3FC0], "CDAB") == bytes.fromhex("3FC00000")
    assert words_to_bytes([0xC03F, 0x0000], "BADC") == bytes.fromhex("3FC00000")
    assert words_to_bytes([0x0000, 0xC03F], "DCBA") == bytes.fromhex("3FC00000")


@pytest.mark.parametrize(("word", "bit", "expected"), [(0b1000, 3, True), (0b1000, 2, False), (0x8000, 15, True)])
def test_bool_is_a_bit_of_a_register(word: int, bit: int, expected: bool) -> None:
    reg = Register(name="f", address=0, data_type="bool", bit=bit)
    assert decode_register(reg, [word]) is expected


def test_string_register() -> None:
    reg = Register(name="model", address=0, data_type="string", length=3)
    assert decode_register(reg, [0x4142, 0x4344, 0x4500]) == "ABCDE"


def test_sentinel_is_compared_on_the_raw_word() -> None:
    assert raw_value([0x7FFF], "ABCD") == 0x7FFF
    assert raw_value([0x0000, 0x7FFF], "CDAB") == 0x7FFF0000


def reg(name: str, address: int, type_: str = "holding", data_type: str = "uint16") -> Register:
    return Register(name=name, address=address, type=type_, data_type=data_type)  # type: ignore[arg-type]


def test_plan_merges_neighbours_and_small_gaps() -> None:
    plan = plan_reads([reg("a", 0), reg("b", 1), reg("c", 5, data_type="float32"), reg("d", 40)], max_gap=8)
    assert [(p.address, p.count, [r.name for r in p.registers]) for p in plan] == [
        (0, 7, ["a", "b", "c"]),
        (40, 1, ["d"]),
    ]


def test_plan_keeps_tables_apart_and_respects_125_words() -> None:
    regs = [reg(f"h{i}", i * 10) for i in range(20)] + [reg("i0", 0, "input")]
    plan = plan_reads(regs, max_gap=10)
    assert [(p.table, p.address, p.count) for p in plan] == [("holding", 0, 121), ("holding", 130, 61), ("input", 0, 1)]
    assert all(p.count <= 125 for p in plan)


def test_plan_bits_up_to_2000() -> None:
    regs = [Register(name=f"c{i}", address=i * 100, type="coil", data_type="bool") for i in range(30)]
    plan = plan_reads(regs, max_gap=100)
    assert [(p.address, p.count) for p in plan] == [(0, 1901), (2000, 901)]


@pytest.mark.parametrize("order", ["ABCD", "DCBA", "BADC", "CDAB"])
@pytest.mark.parametrize("data_type", ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"])
@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (0.1, 0.0), (0.01, 0.0), (0.5, 0.0), (0.3, 0.0), (0.1, -40.0)])
def test_compiled_decoders_match_decode_register(data_type: str, order: str, scale: float, offset: float) -> None:
    """The poll path's specialised decoders give exactly what decode_register gives."""
    import math
    import random

    from collectors.modbus import compile_register

    reg = Register(name="x", address=0, data_type=data_type, order=order, scale=scale, offset=offset,  # type: ignore[arg-type]
                   sentinels=[0x7FFF] if data_type in ("int16", "uint16") else [])  # fmt: skip
    rng = random.Random(f"{data_type}{order}{scale}{offset}")
    samples = [[rng.randrange(0x10000) for _ in range(reg.words)] for _ in range(300)]
    samples += [[0x7FFF] * reg.words, [0x8000] + [0] * (reg.words - 1), [0xFFFF] * reg.words, [0] * reg.words]
    decode = compile_register("dev", reg, 1)
    for words in samples:
        out: list = []  # type: ignore[type-arg]
        decode([0xDEAD, *words, 0xBEEF], 5.0, out)
        (r,) = out
        if reg.sentinels and raw_value(words, order) in reg.sentinels:
            assert (r.value, r.quality) == (None, "bad")
            continue
        expected = decode_register(reg, words)
        assert r.quality == "good" and r.ts == 5.0
        if isinstance(expected, float) and math.isnan(expected):
            assert isinstance(r.value, float) and math.isnan(r.value)
        else:
            assert r.value == expected, (words, r.value, expected)


@pytest.mark.parametrize("order", ["ABCD", "BADC"])
def test_compiled_decoders_match_for_enums_and_named_bits(order: str) -> None:
    """Enumerations and bit maps on the poll path match decode_register / decode_bits."""
    import random

    from collectors.modbus import compile_register, decode_bits

    states = Register(name="state", address=0, data_type="uint16", order=order,  # type: ignore[arg-type]
                      enum={0: "off", 1: "cooling", 4: "defrost"})  # fmt: skip
    status = Register(name="status", address=0, data_type="uint16", order=order,  # type: ignore[arg-type]
                      bits={0: "door_open", 3: "compressor_fault", 15: "sensor_fault"}, sentinels=[0xFFFF])  # fmt: skip
    rng = random.Random(order)
    for words in [[0], [1], [4], [0x0400], [0x0100], [0xFFFF]] + [[rng.randrange(0x10000)] for _ in range(200)]:
        out: list = []  # type: ignore[type-arg]
        compile_register("dev", states, 0)(words, 1.0, out)
        expected = decode_register(states, words)
        assert [r.value for r in out] == [expected]
        out = []
        compile_register("dev", status, 0)(words, 1.0, out)
        if raw_value(words, order) == 0xFFFF:
            assert {r.quality for r in out} == {"bad"}
            continue
        assert [(r.metric, r.value) for r in out][1:] == decode_bits(status, words)
