"""The fuzz targets (fuzz/targets.py) import, accept their seeds and keep their properties.

atheris is not part of the test extra; this runs the same targets on the example image's
artefacts, on ../shared's seed corpus when present, and on hypothesis data, so a target that
no longer imports, rejects what it should accept, or whose property breaks fails here.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
from collections.abc import Callable

import pytest
from conftest import ROOT, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from dstack_mr import DstackMrError, KernelError, example

sys.path.insert(0, str(ROOT / "fuzz"))
import make_corpus
import targets


def v4_quote() -> bytes:
    body = bytearray(584)
    body[136:184] = b"\x11" * 48
    for i in range(4):
        body[328 + 48 * i : 376 + 48 * i] = bytes([0x20 + i]) * 48
    return struct.pack("<HHI", 4, 2, 0x81) + bytes(40) + body + struct.pack("<I", 3) + b"sig"


JSON_LOG = json.dumps(
    [
        {"imr": 0, "event_type": 0x80000001, "digest": "ab" * 48, "event": "", "event_payload": ""},
        {"imr": 3, "event_type": 0x08000001, "digest": "", "event": "app-id",
         "event_payload": "c0ffee", "version": 2},
    ]
).encode()  # fmt: skip

SEEDS = {
    targets.fuzz_tdvf: example.build_firmware(),
    targets.fuzz_kernel: example.build_kernel(),
    targets.fuzz_acpi: example.build_acpi_tables(),
    targets.fuzz_quote: v4_quote(),
    targets.fuzz_json_event_log: JSON_LOG,
    targets.fuzz_vmconfig: b'{"cpu_count": 2, "memory_size": 2147483648, "qemu_version": "8.2.2"}',
    targets.fuzz_sev_ovmf: make_corpus.tiny_sev_ovmf(),
}


def test_selector_bytes_match_the_corpus() -> None:
    names = [t.__name__ for t in targets.TARGETS]
    order = ("TDVF", "KERNEL", "ACPI", "QUOTE", "CCEL", "JSON_LOG", "VMCONFIG",
             "SNP_ATTESTATION", "SNP_CBOR", "SEV_OVMF")  # fmt: skip
    assert [getattr(make_corpus, n) for n in order] == list(range(len(names)))
    assert names == ["fuzz_tdvf", "fuzz_kernel", "fuzz_acpi", "fuzz_quote", "fuzz_ccel",
                     "fuzz_json_event_log", "fuzz_vmconfig", "fuzz_snp_attestation",
                     "fuzz_snp_cbor", "fuzz_sev_ovmf"]  # fmt: skip


@pytest.mark.parametrize("target", list(SEEDS), ids=lambda t: t.__name__)
def test_target_accepts_its_seed(target: Callable[[bytes, int], None]) -> None:
    target(SEEDS[target], 0)


def test_kernel_target_variants() -> None:
    seed = SEEDS[targets.fuzz_kernel]
    for variant in (0, 1, 3):
        targets.fuzz_kernel(seed, variant)
    # 0x37FFFFFF bytes of initrd in 1 MiB of RAM: rejected, by name.
    with pytest.raises(KernelError, match="does not fit below"):
        targets.fuzz_kernel(seed, 2)


def test_targets_accept_the_shared_corpus() -> None:
    shared_path("inputs")
    rejected = []
    for name, data in make_corpus.seeds().items():
        target = targets.TARGETS[data[0] % len(targets.TARGETS)]
        try:
            target(data[1:], data[0] // len(targets.TARGETS))
        except DstackMrError as exc:
            rejected.append((name, type(exc).__name__))
    # Slices of real artefacts (4 KiB firmware tails, kernel heads) are rejected; whole
    # artefacts, captures and logs must be accepted.
    assert all(n.startswith(("tdvf-tail", "tdvf-example-tail", "kernel-")) for n, _ in rejected)
    assert len(rejected) < len(make_corpus.seeds()) // 2


@settings(max_examples=60, deadline=None)
@given(selector=st.integers(0, 255), data=st.binary(max_size=2048))
def test_targets_on_random_bytes(selector: int, data: bytes) -> None:
    with contextlib.suppress(DstackMrError):
        targets.TARGETS[selector % len(targets.TARGETS)](data, selector // len(targets.TARGETS))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_targets_on_mutated_seeds(data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(list(SEEDS)))
    seed = bytearray(SEEDS[target])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(seed) - 1))
        seed[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DstackMrError):
        target(bytes(seed), data.draw(st.integers(0, 7)))
