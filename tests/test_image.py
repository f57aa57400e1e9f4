"""Image: the cached path equals ``Machine.measure_with_logs()`` on every golden vector, also
from many threads at once; cache bounds; ACPI tables cached per dumper invocation; path
escapes in metadata.json are refused."""

from __future__ import annotations

import json
import random
import shutil
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import FakeDumper, load_vectors, shared_path

from dstack_mr import (
    AcpiError,
    AcpiTablesBlob,
    AcpiTablesFile,
    ConfigError,
    DumperInvocation,
    Machine,
    MeasurementDetails,
    OvmfVariant,
    PathEscapeError,
    VmConfig,
)
from dstack_mr import kernel as kernel_mod
from dstack_mr.example import ACPI_TABLES_FILE, build_kernel, write_example_image
from dstack_mr.image import Image, ImageFiles

VECTORS = [v for v in load_vectors() if "expected" in v]
SUFFIX = " initrd=initrd"
#: Metadata cmdline of the image a vector whose cmdline cannot come from metadata.json uses.
FALLBACK_CMDLINE = "console=ttyS0"
THREADS = 8
GIB = 1 << 30
MIB = 1 << 20


def metadata_cmdline(cmdline: str) -> str | None:
    """The metadata cmdline ImageFiles turns into ``cmdline``; None if there is none."""
    return cmdline[: -len(SUFFIX)] if cmdline.endswith(SUFFIX) else None


def vm_config_for(vector: dict[str, Any]) -> VmConfig | None:
    """The VmConfig whose ``machine_for`` is the vector's machine, when there is one.

    ``machine_for`` always sets root_verity, never smm, and maps pci_hole64_size 0 to None;
    the cmdline must come from metadata.json.
    """
    m = vector["machine"]
    if (
        m["smm"]
        or not m["root_verity"]
        or m["pci_hole64_size"] == 0
        or metadata_cmdline(vector["cmdline"]) is None
    ):
        return None
    return VmConfig(
        cpu_count=m["cpu_count"],
        memory_size=m["memory_size"],
        qemu_single_pass_add_pages=m["two_pass_add_pages"],
        pic=m["pic"],
        qemu_version=m["qemu_version"],
        pci_hole64_size=m["pci_hole64_size"] or 0,
        hugepages=m["hugepages"],
        num_gpus=m["num_gpus"],
        num_nvswitches=m["num_nvswitches"],
        hotplug_off=m["hotplug_off"],
        host_share_mode=m["host_share_mode"],
        ovmf_variant=OvmfVariant(m["ovmf_variant"]),
    )


@attrs.frozen
class Case:
    vector: dict[str, Any] = attrs.field(eq=False)
    image_dir: Path
    acpi: Path
    machine: Machine
    vm: VmConfig | None


def _write_image(directory: Path, inputs: Path, files: dict[str, str], cmdline: str) -> None:
    directory.mkdir()
    # Copies, not symlinks: links that lead out of the image directory are refused.
    for role, name in (("firmware", "ovmf.fd"), ("kernel", "bzImage"), ("initrd", "initrd")):
        shutil.copyfile(inputs / files[role], directory / name)
    meta = {"bios": "ovmf.fd", "kernel": "bzImage", "initrd": "initrd", "cmdline": cmdline}
    (directory / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """One image directory per distinct (files, cmdline); a Case per golden vector."""
    inputs = shared_path("inputs")
    root = tmp_path_factory.mktemp("images")
    dirs: dict[tuple[str, str, str, str], Path] = {}
    out: dict[str, Case] = {}
    for vector in VECTORS:
        files = vector["inputs"]
        cmdline = metadata_cmdline(vector["cmdline"])
        meta_cmdline = FALLBACK_CMDLINE if cmdline is None else cmdline
        key = (files["firmware"], files["kernel"], files["initrd"], meta_cmdline)
        if key not in dirs:
            dirs[key] = root / f"img{len(dirs)}"
            _write_image(dirs[key], inputs, files, meta_cmdline)
        image_files = ImageFiles.from_dir(dirs[key])
        if cmdline is not None:
            assert image_files.cmdline == vector["cmdline"]
        machine = Machine(
            firmware=image_files.firmware,
            kernel=image_files.kernel,
            initrd=image_files.initrd,
            kernel_cmdline=vector["cmdline"],
            **vector["machine"],
        )
        out[vector["name"]] = Case(
            vector, dirs[key], inputs / files["acpi_tables"], machine, vm_config_for(vector)
        )
    # Every non-empty cmdline of the vectors goes through metadata.json, as in a real image.
    assert all(metadata_cmdline(v["cmdline"]) is not None for v in VECTORS if v["cmdline"])
    return out


@pytest.fixture(scope="module")
def references(cases: dict[str, Case]) -> dict[str, MeasurementDetails]:
    """``Machine.measure_with_logs()`` per vector, checked against the vector's digests."""
    refs = {}
    for name, case in cases.items():
        details = case.machine.measure_with_logs(AcpiTablesFile(case.acpi))
        check_expected(details, case)
        refs[name] = details
    return refs


def check_expected(details: MeasurementDetails, case: Case) -> None:
    want = case.vector["expected"]
    got = details.measurements.to_dict()
    assert got == {k: want[k] for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2")}, case.vector["name"]
    assert [[d.hex() for d in log.digests] for log in details.rtmr_logs] == want["rtmr_logs"]
    assert details.acpi_tables.tables_digest.hex() == want["acpi"]["tables_sha384"]
    assert details.acpi_tables.rsdp.hex() == want["acpi"]["rsdp"]
    assert details.acpi_tables.loader_digest.hex() == want["acpi"]["loader_sha384"]
    names = {"{firmware}": case.machine.firmware, "{kernel}": case.machine.kernel}
    argv = [names.get(a, a) for a in want["dumper_calls"][0]["argv"]]
    assert list(details.invocation.argv) == argv
    assert details.invocation.compat_ver == want["dumper_calls"][0]["compat_ver"]


def load_images(cases: dict[str, Case], **cache_sizes: int) -> dict[str, Image]:
    """One Image per (image directory, ACPI blob), shared by every vector that uses it."""
    by_key: dict[tuple[Path, Path], Image] = {}
    for case in cases.values():
        key = (case.image_dir, case.acpi)
        if key not in by_key:
            by_key[key] = Image.load(case.image_dir, AcpiTablesFile(case.acpi), **cache_sizes)
    return {name: by_key[(c.image_dir, c.acpi)] for name, c in cases.items()}


def test_every_vector_has_a_case(cases: dict[str, Case]) -> None:
    assert len(cases) == len(VECTORS) >= 25
    assert sum(c.vm is not None for c in cases.values()) >= 20
    assert any(c.vm is None for c in cases.values())  # the smm / root_verity / empty ones


@pytest.mark.parametrize("name", [str(v["name"]) for v in VECTORS])
def test_image_equals_measure_with_logs(
    name: str, cases: dict[str, Case], references: dict[str, MeasurementDetails]
) -> None:
    case = cases[name]
    image = load_images({name: case})[name]
    reference = references[name]
    assert image.measure_machine(case.machine) == reference
    if case.vm is not None:
        assert image.machine(case.vm) == case.machine
        assert image.measure(case.vm) == reference
    # Second time from the caches: still the same.
    assert image.measure_machine(case.machine) == reference


@pytest.mark.parametrize("seed", [1, 2])
def test_image_concurrent_equals_measure_with_logs(
    seed: int, cases: dict[str, Case], references: dict[str, MeasurementDetails]
) -> None:
    """THREADS threads share fresh Images (small caches, so entries are evicted and
    recomputed while other threads read them) and measure every vector in random order."""
    images = load_images(cases, kernel_cache_size=2, acpi_cache_size=3)
    tasks: list[tuple[str, str]] = []
    for name, case in cases.items():
        tasks += [(name, "machine")] * 3
        if case.vm is not None:
            tasks += [(name, "vm")] * 3
    random.Random(seed).shuffle(tasks)
    start = threading.Barrier(THREADS)

    def run(task: tuple[str, str]) -> tuple[str, MeasurementDetails]:
        name, kind = task
        case = cases[name]
        if kind == "vm":
            assert case.vm is not None
            return name, images[name].measure(case.vm)
        return name, images[name].measure_machine(case.machine)

    def worker(chunk: list[tuple[str, str]]) -> list[tuple[str, MeasurementDetails]]:
        start.wait()
        return [run(t) for t in chunk]

    chunks = [tasks[i::THREADS] for i in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for rs in pool.map(worker, chunks) for r in rs]
    assert len(results) == len(tasks)
    wrong = [name for name, details in results if details != references[name]]
    assert wrong == []
    for image in set(images.values()):
        assert len(image._kernel_digests) <= 2


# --- caches, on the bundled example image (no ../shared needed) -------------------------------


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_example_image(tmp_path_factory.mktemp("example") / "img").parent


@attrs.define
class CountingAcpi:
    """An AcpiSource that serves one blob and records every invocation it is asked for."""

    blob: bytes
    calls: list[DumperInvocation] = attrs.Factory(list)
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def acpi_tables(self, invocation: DumperInvocation) -> bytes:
        with self.lock:
            self.calls.append(invocation)
        return self.blob


def test_example_image_equals_measure_with_logs(example_dir: Path) -> None:
    acpi = AcpiTablesFile(example_dir / ACPI_TABLES_FILE)
    image = Image.load(example_dir, acpi)
    for vm in (
        VmConfig(cpu_count=1, memory_size=2 * GIB),
        VmConfig(cpu_count=4, memory_size=512 * MIB, qemu_version="8.2.2"),
        VmConfig(cpu_count=8, memory_size=64 * GIB, num_gpus=2, hugepages=True),
        VmConfig(cpu_count=2, memory_size=3 * GIB, ovmf_variant=OvmfVariant.STABLE202505),
    ):
        want = image.machine(vm).measure_with_logs(acpi)
        assert image.measure(vm) == want
        assert image.measure(vm) == want  # cached


def test_kernel_digest_cache_is_bounded_lru(
    example_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = kernel_mod.patched_kernel_digest
    computed: list[int] = []

    def counting(kernel: bytes, initrd_size: int, memory_size: int) -> bytes:
        computed.append(memory_size)
        return real(kernel, initrd_size, memory_size)

    monkeypatch.setattr(kernel_mod, "patched_kernel_digest", counting)
    blob = (example_dir / ACPI_TABLES_FILE).read_bytes()
    image = Image.load(example_dir, AcpiTablesBlob(blob), kernel_cache_size=2)
    # Below 2 GiB every memory size moves the initrd; 2 GiB and all sizes from 2.75 GiB up
    # share one address.
    sizes = [512, 1024, 1536, 2048, 512, 2048, 3072, 4096, 1024]
    for mib in sizes:
        vm = VmConfig(cpu_count=2, memory_size=mib * MIB)
        assert image.measure(vm) == image.machine(vm).measure_with_logs(AcpiTablesBlob(blob))
        assert len(image._kernel_digests) <= 2
    # LRU of 2 addresses: 2048 (again), 3072 and 4096 hit; 1024 was evicted long ago.
    assert [m // MIB for m in computed] == [512, 1024, 1536, 2048, 512, 1024]


def test_acpi_cache_is_bounded_lru(example_dir: Path) -> None:
    source = CountingAcpi((example_dir / ACPI_TABLES_FILE).read_bytes())
    image = Image.load(example_dir, source, acpi_cache_size=2)
    cpus = [1, 2, 1, 3, 1, 2, 2]
    for cpu in cpus:
        image.measure(VmConfig(cpu_count=cpu, memory_size=2 * GIB))
        assert len(image.acpi._cache) <= 2
    # LRU of 2: 1, 2, (1 hit), 3 evicts 2, (1 hit), 2 evicts 3, (2 hit).
    asked = [int(inv.argv[inv.argv.index("-smp") + 1]) for inv in source.calls]
    assert asked == [1, 2, 3, 2]


def test_acpi_cache_keyed_by_invocation(example_dir: Path, fake_dumper: FakeDumper) -> None:
    """The real dumper path: one dumper run per distinct argv + QEMU_ACPI_COMPAT_VER."""
    fake_dumper.serve(example_dir / ACPI_TABLES_FILE)
    image = Image.load(example_dir)
    configs = [
        VmConfig(cpu_count=1, memory_size=2 * GIB),
        VmConfig(cpu_count=2, memory_size=2 * GIB),
        VmConfig(cpu_count=1, memory_size=2 * GIB),
        # Same argv as the first (pic stays off), other QEMU_ACPI_COMPAT_VER:
        VmConfig(cpu_count=1, memory_size=2 * GIB, qemu_version="9.2.0"),
        VmConfig(cpu_count=2, memory_size=2 * GIB),
        VmConfig(cpu_count=1, memory_size=2 * GIB, qemu_version="9.2.0"),
    ]
    invocations = [image.measure(vm).invocation for vm in configs]
    assert invocations[0].argv == invocations[3].argv
    distinct = list(dict.fromkeys(invocations))
    assert len(distinct) == 3
    assert fake_dumper.calls() == [
        {"argv": list(inv.argv), "compat_ver": inv.compat_ver} for inv in distinct
    ]


def test_acpi_dumper_runs_once_for_concurrent_requests(
    example_dir: Path, fake_dumper: FakeDumper
) -> None:
    fake_dumper.serve(example_dir / ACPI_TABLES_FILE)
    image = Image.load(example_dir)
    vm = VmConfig(cpu_count=3, memory_size=4 * GIB)
    start = threading.Barrier(THREADS)

    def measure(_: int) -> MeasurementDetails:
        start.wait()
        return image.measure(vm)

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(measure, range(THREADS)))
    assert all(r == results[0] for r in results)
    assert len(fake_dumper.calls()) == 1
    assert image.acpi._cache._gates == {}  # no lock left behind


def test_acpi_failure_is_not_cached(example_dir: Path) -> None:
    """A failing source fails every waiting caller and leaves nothing behind."""
    calls: list[int] = []

    class Failing:
        def acpi_tables(self, invocation: DumperInvocation) -> bytes:
            calls.append(1)
            raise AcpiError("dumper exploded")

    image = Image.load(example_dir, Failing())
    vm = VmConfig(cpu_count=2, memory_size=2 * GIB)
    start = threading.Barrier(4)

    def measure(_: int) -> str:
        start.wait()
        with pytest.raises(AcpiError, match="exploded"):
            image.measure(vm)
        return "raised"

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(measure, range(4))) == ["raised"] * 4
    assert len(calls) == 4  # each caller tried; no failure was cached
    assert image.acpi._cache._gates == {}


@pytest.mark.parametrize("head", [0x1000, 0x1800, 0x10000])
@pytest.mark.parametrize("memory_mib", [512, 2048, 4096])
def test_patched_kernel_digest_without_full_copy(
    head: int, memory_mib: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-request kernel digests patch only a copy of the head; same digest as a full copy
    (the head ending inside the headers, at a section boundary, or inside a section)."""
    monkeypatch.setattr(kernel_mod, "_PATCHED_HEAD", head)
    k = example_kernel_padded()
    want = kernel_mod.authenticode_sha384(kernel_mod.patch(k, 70_000, memory_mib * MIB))
    assert kernel_mod.patched_kernel_digest(k, 70_000, memory_mib * MIB) == want


def test_patched_kernel_digest_headers_beyond_head() -> None:
    """A PE header past the copied head takes the full-copy path, with the same result."""
    k = bytearray(example_kernel_padded())
    pe = struct.unpack_from("<I", k, 0x3C)[0]
    coff = pe + 4
    (count,) = struct.unpack_from("<H", k, coff + 2)
    (opt_size,) = struct.unpack_from("<H", k, coff + 16)
    end = coff + 20 + opt_size + 40 * count  # PE signature to the end of the section table
    moved = kernel_mod._PATCHED_HEAD + 0x100
    k[moved : moved + end - pe] = k[pe:end]
    struct.pack_into("<I", k, 0x3C, moved)
    struct.pack_into("<I", k, moved + 4 + 20 + 60, moved + end - pe)  # SizeOfHeaders
    want = kernel_mod.authenticode_sha384(kernel_mod.patch(bytes(k), 70_000, 2 * GIB))
    assert kernel_mod.patched_kernel_digest(bytes(k), 70_000, 2 * GIB) == want
    assert want != kernel_mod.patched_kernel_digest(example_kernel_padded(), 70_000, 2 * GIB)


def example_kernel_padded() -> bytes:
    """The example kernel with a 256 KiB overlay, so it is longer than the patched head."""
    k = build_kernel()
    return k + bytes(range(256)) * 1024


# --- refusals --------------------------------------------------------------------------------


def _rewrite_metadata(image_dir: Path, **changes: str) -> None:
    meta_path = image_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "field,make_value",
    [
        ("bios", lambda d: "../outside.fd"),
        ("kernel", lambda d: "sub/../../outside.fd"),
        ("initrd", lambda d: str(d.parent / "outside.fd")),  # absolute
        ("bios", lambda d: "escape-link"),  # a symlink out of the directory
    ],
)
def test_load_rejects_metadata_path_escapes(
    tmp_path: Path, field: str, make_value: Callable[[Path], str]
) -> None:
    image_dir = write_example_image(tmp_path / "img").parent
    (tmp_path / "outside.fd").write_bytes((image_dir / "ovmf.fd").read_bytes())
    (image_dir / "escape-link").symlink_to(tmp_path / "outside.fd")
    Image.load(image_dir, AcpiTablesBlob(b""))  # the unmodified image loads
    _rewrite_metadata(image_dir, **{field: make_value(image_dir)})
    with pytest.raises(PathEscapeError):
        Image.load(image_dir, AcpiTablesBlob(b""))


def test_measure_machine_rejects_other_files(example_dir: Path, tmp_path: Path) -> None:
    image = Image.load(example_dir, AcpiTablesFile(example_dir / ACPI_TABLES_FILE))
    machine = image.machine(VmConfig(cpu_count=1, memory_size=2 * GIB))
    other = tmp_path / "bzImage"
    shutil.copyfile(machine.kernel, other)
    with pytest.raises(ConfigError, match="not this image's files"):
        image.measure_machine(attrs.evolve(machine, kernel=str(other)))


def test_cache_sizes_must_be_positive(example_dir: Path) -> None:
    with pytest.raises(ConfigError):
        Image.load(example_dir, AcpiTablesBlob(b""), kernel_cache_size=0)
