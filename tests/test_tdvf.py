"""MRTD against a literal, record-by-record transcription of the TDX module's algorithm."""

from __future__ import annotations

import hashlib

import pytest
from conftest import shared_path

from dstack_mr import tdvf
from dstack_mr.example import build_firmware


def naive_mrtd(t: tdvf.Tdvf, two_pass: bool) -> bytes:
    h = hashlib.sha384()

    def add(s: tdvf.TdvfSection, page: int) -> None:
        if not s.attributes & tdvf.ATTR_PAGE_AUG:
            gpa = s.memory_address + page * 4096
            h.update(b"MEM.PAGE.ADD" + bytes(4) + gpa.to_bytes(8, "little") + bytes(104))

    def extend(s: tdvf.TdvfSection, page: int) -> None:
        if s.attributes & tdvf.ATTR_MR_EXTEND:
            for i in range(16):
                gpa = s.memory_address + page * 4096 + i * 256
                h.update(b"MR.EXTEND" + bytes(7) + gpa.to_bytes(8, "little") + bytes(104))
                off = s.data_offset + page * 4096 + i * 256
                h.update(t.firmware[off : off + 256])

    for s in t.sections:
        if two_pass:
            for p in range(s.pages):
                add(s, p)
            for p in range(s.pages):
                extend(s, p)
        else:
            for p in range(s.pages):
                add(s, p)
                extend(s, p)
    return h.digest()


def firmware(name: str) -> bytes:
    if name == "example":
        return build_firmware()
    return shared_path("inputs", name).read_bytes()


@pytest.mark.parametrize("name", ["example", "ovmf-2022.11-deb12.fd", "ovmf-2025.02-deb13.fd"])
@pytest.mark.parametrize("two_pass", [False, True])
def test_mrtd_equals_literal_algorithm(name: str, two_pass: bool) -> None:
    t = tdvf.parse(firmware(name))
    assert t.mrtd(two_pass) == naive_mrtd(t, two_pass)
    assert t.mrtd(two_pass) != t.mrtd(not two_pass)
