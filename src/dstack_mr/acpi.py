"""RTMR0's three ACPI events: QEMU's table-loader script, the RSDP and the tables blob.

The tables themselves come from QEMU. They reach this library through one small interface,
:class:`AcpiSource`: either :class:`AcpiDumper`, which runs dstack's patched QEMU
(``dstack-acpi-tables``) with exactly the reference's arguments, or :class:`AcpiTablesBlob` /
:class:`AcpiTablesFile`, for tables the caller already has. There is never a silent fallback
from one to the other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import subprocess

from ._binary import Buffer, u32
from ._lru import LruCache
from .digest import sha384
from .errors import (
    AcpiError,
    ConfigError,
    DumperFailedError,
    DumperNotFoundError,
    DumperOutputError,
    DumperTimeoutError,
)
from .files import read_file

DUMPER_NAME = "dstack-acpi-tables"
#: Environment variable naming the dumper program, when it is not on PATH.
DUMPER_ENV = "DSTACK_MR_ACPI_DUMPER"
COMPAT_ENV = "QEMU_ACPI_COMPAT_VER"
DEFAULT_TIMEOUT = 30.0
#: QEMU's tables are ~128 KiB; anything near this limit is not an ACPI table blob.
MAX_TABLES_SIZE = 64 << 20
LOADER_SIZE = 4096
REQUIRED_TABLES = ("DSDT", "FACP", "APIC", "MCFG", "WAET", "RSDT")
SHARE_MODES = ("", "9p", "vhd", "vvfat")
#: Cheap per-count bounds checked before any argv is built (one pcie-root-port per GPU /
#: NVSwitch, and QEMU's `chassis` is a u8; a q35 bus has 32 slots x 8 functions). Whether
#: the counts fit together is decided by the PCI slots (:mod:`dstack_mr.pci_slots`).
MAX_PASSTHROUGH_PORTS = 256
MAX_BLOCK_AND_NET_DEVICES = 256

_DUMMY_DISK = "/bin/sh"
_SHARED_DIR = "/bin"


@attrs.frozen
class AcpiTables:
    """The three blobs OVMF measures: table-loader commands, RSDP and tables."""

    tables: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    rsdp: bytes
    loader: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    #: which AcpiSource produced the tables (:func:`source_name`), "" when not recorded
    source: str = attrs.field(default="", kw_only=True)

    @property
    def tables_digest(self) -> bytes:
        return sha384(self.tables)

    @property
    def rsdp_digest(self) -> bytes:
        return sha384(self.rsdp)

    @property
    def loader_digest(self) -> bytes:
        return sha384(self.loader)


@attrs.frozen
class DumperInvocation:
    """What the reference passes to ``dstack-acpi-tables``: argv (after the program name) and
    ``QEMU_ACPI_COMPAT_VER``. Also the cache key for tables, since the output depends on
    nothing else."""

    argv: tuple[str, ...]
    compat_ver: str

    @property
    def env(self) -> dict[str, str]:
        return {COMPAT_ENV: self.compat_ver}


def dumper_invocation(
    *,
    cpu_count: int,
    memory_size: int,
    firmware: str,
    kernel: str,
    root_verity: bool,
    smm: bool,
    pic: bool,
    qemu_version: tuple[int, int, int],
    hugepages: bool,
    num_gpus: int,
    num_nvswitches: int,
    hotplug_off: bool,
    pci_hole64_size: int | None,
    host_share_mode: str,
    num_nics: int = 1,
    num_verity_volumes: int = 0,
    swtpm: bool = False,
) -> DumperInvocation:
    """The exact QEMU command line the reference gives the dumper for this machine.

    The settings are a :class:`~dstack_mr.machine.Machine`'s, which checked their ranges
    (``SHARE_MODES``, ``MAX_PASSTHROUGH_PORTS``, ``MAX_BLOCK_AND_NET_DEVICES``) and that
    QEMU finds a PCI slot for every device when it was made; only ``swtpm`` is refused here,
    where tables are measured.

    ``num_nics`` / ``num_verity_volumes`` follow upstream dstack (after e1003b63): at their
    defaults (1 and 0) the argv is the reference's, byte for byte.
    """
    if swtpm:
        # Upstream refuses too: a TPM adds ACPI content no dumper argv here describes, so
        # any RTMR0 computed from tables would be a guess.
        raise ConfigError(
            "swtpm is true: the VM has a software TPM whose ACPI tables are not modelled, so "
            "RTMR0 cannot be computed from ACPI tables; verify it in lite mode instead "
            "(vm_config.tdx_measurement, ACPI digests taken from the event log)"
        )
    mem_mb = memory_size // (1024 * 1024)
    args = [
        "-cpu", "qemu64", "-smp", str(cpu_count), "-m", f"{mem_mb}M",
        "-nographic", "-nodefaults", "-serial", "stdio",
        "-bios", firmware, "-kernel", kernel, "-initrd", _DUMMY_DISK,
        "-drive", f"file={_DUMMY_DISK},if=none,id=hd1,format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=hd1",
    ]  # fmt: skip
    # Upstream's device order (dstack-vmm's): verity volumes after hd1, then the NICs, where
    # the reference had its one fixed net0.
    for i in range(num_verity_volumes):
        args += [
            "-drive", f"file={_DUMMY_DISK},if=none,id=vol{i},format=raw,readonly=on",
            "-device", f"virtio-blk-pci,drive=vol{i}",
        ]  # fmt: skip
    for i in range(num_nics):
        args += ["-netdev", f"user,id=net{i}", "-device", f"virtio-net-pci,netdev=net{i}"]
    args += ["-object", "tdx-guest,id=tdx", "-device", "vhost-vsock-pci,guest-cid=3"]
    if host_share_mode in ("vhd", "vvfat"):
        args += [
            "-drive", f"file={_DUMMY_DISK},if=none,id=hd2,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=hd2",
        ]  # fmt: skip
    else:
        args += [
            "-virtfs",
            f"local,path={_SHARED_DIR},mount_tag=host-shared,readonly=on,"
            "security_model=none,id=virtfs0",
        ]
    if root_verity:
        args += [
            "-drive", f"file={_DUMMY_DISK},if=none,id=hd0,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=hd0",
        ]  # fmt: skip
    else:
        args += ["-cdrom", _DUMMY_DISK]
    machine = "q35,kernel-irqchip=split,confidential-guest-support=tdx,hpet=off"
    machine += ",smm=on" if smm else ",smm=off"
    machine += ",pic=on" if pic else ",pic=off"
    args += ["-machine", machine]
    if hugepages:
        args += [
            "-numa", f"node,nodeid=0,cpus=0-{cpu_count - 1},memdev=mem0",
            "-object",
            f"memory-backend-file,id=mem0,size={mem_mb}M,mem-path=/dev/hugepages,"
            "share=on,prealloc=no,host-nodes=0,policy=bind",
        ]  # fmt: skip
    port = 0
    if num_gpus > 0:
        args += ["-object", "iommufd,id=iommufd0"]
        bus = "pcie.0"
        if hugepages:
            args += ["-device", "pxb-pcie,id=pcie.node0,bus=pcie.0,addr=10,numa_node=0,bus_nr=5"]
            bus = "pcie.node0"
        for _ in range(num_gpus):
            args += _passthrough_port(port, bus)
            port += 1
    for _ in range(num_nvswitches):
        args += _passthrough_port(port, "pcie.0")
        port += 1
    if hotplug_off:
        args += ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]
    if pci_hole64_size is not None:
        args += ["-global", f"q35-pcihost.pci-hole64-size={pci_hole64_size:#x}"]
    return DumperInvocation(tuple(args), "{}.{}.{}".format(*qemu_version))


def _passthrough_port(port: int, bus: str) -> list[str]:
    return [
        "-device", f"pcie-root-port,id=pci.{port},bus={bus},chassis={port}",
        "-device", f"vfio-pci,host=00:00.0,bus=pci.{port},iommufd=iommufd0",
    ]  # fmt: skip


# --- where the tables come from -----------------------------------------------------------


@runtime_checkable
class AcpiSource(Protocol):
    """Anything that turns a dumper invocation into the raw ``etc/acpi/tables`` blob."""

    def acpi_tables(self, invocation: DumperInvocation) -> bytes: ...


def source_name(source: AcpiSource) -> str:
    """A short label for where an AcpiSource's tables come from ("dumper", "builtin", ...)."""
    name = getattr(source, "source_name", None)
    return name if isinstance(name, str) else type(source).__name__


@attrs.frozen
class AcpiTablesBlob:
    """Tables the caller already holds (e.g. dumped once on a host). The invocation is ignored:
    the caller vouches that the blob belongs to this machine configuration."""

    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    source_name = "blob"

    def acpi_tables(self, invocation: DumperInvocation) -> bytes:
        return self.data


@attrs.frozen
class AcpiTablesFile:
    """Tables read from a file when needed (same contract as :class:`AcpiTablesBlob`)."""

    path: Path = attrs.field(converter=Path)

    @property
    def source_name(self) -> str:
        return f"file {self.path}"

    def acpi_tables(self, invocation: DumperInvocation) -> bytes:
        return read_file(self.path, "ACPI tables file", MAX_TABLES_SIZE, AcpiError)


@attrs.frozen
class AcpiDumper:
    """Runs ``dstack-acpi-tables`` (dstack's patched QEMU) as the reference does.

    The program is ``program`` if given, else ``$DSTACK_MR_ACPI_DUMPER``, else
    ``dstack-acpi-tables`` on PATH. It runs without a shell, with the caller's environment
    plus ``QEMU_ACPI_COMPAT_VER``, is killed (with its process group) after ``timeout``
    seconds, and its stdout is the blob.
    """

    program: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_output: int = MAX_TABLES_SIZE
    source_name = "dumper"

    def resolve(self) -> str:
        import shutil  # the dumper's helpers load only when a dumper runs (CLI start-up)

        name = self.program or os.environ.get(DUMPER_ENV) or DUMPER_NAME
        found = shutil.which(name)
        if found is None:
            origin = (
                "given as the dumper program" if self.program
                else f"named by ${DUMPER_ENV}" if os.environ.get(DUMPER_ENV)
                else "looked up on PATH"
            )  # fmt: skip
            raise DumperNotFoundError(
                f"ACPI dumper {name!r} ({origin}) was not found or is not executable. "
                f"It is dstack's patched QEMU that prints the guest's ACPI tables; build it "
                f"from the dstack repository and put it on PATH, point ${DUMPER_ENV} or "
                "--acpi-dumper at it, or pass the tables with --acpi-tables FILE "
                "(AcpiTablesFile in the library)."
            )
        return found

    def acpi_tables(self, invocation: DumperInvocation) -> bytes:
        timeout, limit = self.timeout, self.max_output
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
            raise ConfigError(f"dumper timeout must be a number of seconds, got {timeout!r}")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise ConfigError(f"dumper max_output must be an integer, got {limit!r}")
        program = self.resolve()
        env = dict(os.environ)
        env.update(invocation.env)
        argv = [program, *invocation.argv]
        for i, arg in enumerate([*argv, invocation.compat_ver]):
            if not isinstance(arg, str) or "\0" in arg or not _encodable(arg):
                what = f"argument {i}" if i < len(argv) else COMPAT_ENV
                raise ConfigError(
                    f"dumper {what} {arg!r} cannot be passed to a program "
                    "(a NUL byte or a lone surrogate; check the firmware and kernel paths)"
                )
        return _run_capped(argv, env, timeout, limit)


def _encodable(arg: str) -> bool:
    try:
        os.fsencode(arg)
    except UnicodeEncodeError:
        return False
    return True


#: select() is re-armed at least this often, so an infinite timeout never overflows it.
_MAX_WAIT_S = 3600.0


def _run_capped(argv: list[str], env: Mapping[str, str], timeout: float, limit: int) -> bytes:
    import selectors
    import subprocess

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,  # so a timeout can kill QEMU's children too
            close_fds=True,
        )
    except OSError as exc:
        raise DumperNotFoundError(f"cannot start ACPI dumper {argv[0]}: {exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    out = bytearray()
    err = bytearray()
    deadline = time.monotonic() + timeout
    problem: Exception | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                problem = DumperTimeoutError(
                    f"ACPI dumper {argv[0]} did not finish within {timeout:g} s and was killed"
                )
                break
            for key, _ in sel.select(min(left, _MAX_WAIT_S)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf: bytearray = key.data
                buf += chunk
                if buf is err and len(err) > 65536:
                    del err[: len(err) - 65536]
            if len(out) > limit:
                problem = DumperOutputError(
                    f"ACPI dumper {argv[0]} printed more than {limit} bytes: not a table blob"
                )
                break
    if problem is None:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            problem = DumperTimeoutError(
                f"ACPI dumper {argv[0]} did not exit within {timeout:g} s and was killed"
            )
    if problem is not None:
        _kill(proc)
    proc.stdout.close()
    proc.stderr.close()
    if problem is not None:
        raise problem
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip() or "(no message on stderr)"
        raise DumperFailedError(
            f"ACPI dumper {argv[0]} exited with status {proc.returncode}: {message}"
        )
    if not out:
        raise DumperOutputError(f"ACPI dumper {argv[0]} exited successfully but printed nothing")
    return bytes(out)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


class CachedAcpiSource:
    """Memoises another source's blobs per invocation (bounded LRU, thread-safe)."""

    def __init__(self, inner: AcpiSource, maxsize: int = 64) -> None:
        self.inner = inner
        self._cache: LruCache[DumperInvocation, bytes] = LruCache(maxsize)

    @property
    def source_name(self) -> str:
        return source_name(self.inner)

    def acpi_tables(self, invocation: DumperInvocation) -> bytes:
        return self._cache.get_or_compute(invocation, lambda: self.inner.acpi_tables(invocation))

    def __repr__(self) -> str:
        return f"CachedAcpiSource({self.inner!r}, {len(self._cache)}/{self._cache.maxsize} blobs)"


# --- the measured blobs -------------------------------------------------------------------


def find_tables(blob: Buffer, signatures: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(offset, length) of the first table with each signature, walking headers from 0.

    One walk serves every signature (the reference walks once per table; the result is the
    same, but a hostile blob of tiny tables no longer costs a walk per signature).
    """
    wanted = {sig.encode("ascii"): sig for sig in signatures}
    found: dict[str, tuple[int, int]] = {}
    off = 0
    while off + 8 <= len(blob) and len(found) < len(wanted):
        length = u32(blob, off + 4, "ACPI table length", AcpiError)
        sig = wanted.get(bytes(blob[off : off + 4]))
        if sig is not None and sig not in found:
            if off + length > len(blob):
                # The reference would emit a loader for bytes that do not exist; a real QEMU
                # never produces this, so refuse rather than bless such a blob.
                raise AcpiError(
                    f"ACPI table {sig} at offset {off:#x} claims {length} bytes, "
                    f"past the end of the {len(blob)}-byte blob"
                )
            found[sig] = (off, length)
            continue
        if length == 0:
            missing = [s for s in signatures if s not in found]
            raise AcpiError(
                f"ACPI table at offset {off:#x} ({bytes(blob[off : off + 4])!r}) has length 0 "
                f"while looking for {', '.join(missing)}"
            )
        off += length
    for sig in signatures:
        if sig not in found:
            raise AcpiError(f"required ACPI table {sig} not found in the {len(blob)}-byte blob")
    return found


def find_table(blob: Buffer, signature: str) -> tuple[int, int]:
    """(offset, length) of the first table with ``signature``."""
    return find_tables(blob, [signature])[signature]


def _name(file: str) -> bytes:
    return file.encode().ljust(56, b"\0")


def _allocate(file: str, align: int, zone: int) -> bytes:
    return (1).to_bytes(4, "little") + _name(file) + align.to_bytes(4, "little") + bytes([zone])


def _add_pointer(pointer: str, pointee: str, offset: int, size: int) -> bytes:
    return (
        (2).to_bytes(4, "little") + _name(pointer) + _name(pointee)
        + offset.to_bytes(4, "little") + bytes([size])
    )  # fmt: skip


def _add_checksum(file: str, result: int, start: int, length: int) -> bytes:
    return (
        (3).to_bytes(4, "little") + _name(file) + result.to_bytes(4, "little")
        + start.to_bytes(4, "little") + length.to_bytes(4, "little")
    )  # fmt: skip


def build_tables(blob: bytes, source: str = "") -> AcpiTables:
    """The loader script and RSDP QEMU builds for this tables blob."""
    if not blob:
        raise AcpiError("ACPI tables blob is empty")
    if len(blob) > MAX_TABLES_SIZE:
        raise AcpiError(f"ACPI tables blob is {len(blob)} bytes: not a table blob")
    t = find_tables(blob, REQUIRED_TABLES)
    tables, rsdp_file = "etc/acpi/tables", "etc/acpi/rsdp"

    def checksum(sig: str) -> bytes:
        off, length = t[sig]
        return _add_checksum(tables, off + 9, off, length)

    facp, rsdt = t["FACP"][0], t["RSDT"][0]
    commands = [
        _allocate(rsdp_file, 16, 2),
        _allocate(tables, 64, 1),
        checksum("DSDT"),
        _add_pointer(tables, tables, facp + 36, 4),  # FIRMWARE_CTRL -> FACS
        _add_pointer(tables, tables, facp + 40, 4),  # DSDT
        _add_pointer(tables, tables, facp + 140, 8),  # X_DSDT
        checksum("FACP"),
        checksum("APIC"),
        checksum("MCFG"),
        checksum("WAET"),
        # The reference always patches four RSDT entries, whatever the RSDT holds.
        *(_add_pointer(tables, tables, rsdt + 36 + 4 * i, 4) for i in range(4)),
        checksum("RSDT"),
        _add_pointer(rsdp_file, tables, 16, 4),
        _add_checksum(rsdp_file, 8, 0, 20),
    ]
    loader = b"".join(c.ljust(128, b"\0") for c in commands).ljust(LOADER_SIZE, b"\0")
    rsdp = b"RSD PTR " + b"\0" + b"BOCHS " + b"\0" + rsdt.to_bytes(4, "little")
    return AcpiTables(tables=bytes(blob), rsdp=rsdp, loader=loader, source=source)
