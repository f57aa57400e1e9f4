"""RTMR1's first event: the Authenticode digest of the kernel as QEMU patched it in memory.

QEMU's ``-kernel`` loader writes boot-protocol fields into the bzImage setup header (loader
type, heap end, command-line pointer, initrd address and size) before OVMF measures the
image, so the digest depends on the initrd size and the guest's memory size, not only on the
kernel file.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from ._binary import Buffer, u16, u32
from .errors import KernelError
from .registry import U32_MAX as _U32_MAX

#: Bytes QEMU reserves for ACPI data at the top of low memory (its ``acpi_data_size``).
ACPI_DATA_SIZE = 0x28000
#: At and above this memory size QEMU's low-memory layout (and so the initrd address) is fixed.
STABLE_MIN_MEMORY = 0xB000_0000
MIN_KERNEL_LEN = 0x1000
_PE_SIGNATURE = 0x0000_4550  # "PE\0\0"
_CERT_DIR_INDEX = 4
#: Section data a PE can make Authenticode hash: sections may overlap, so 65535 of them each
#: spanning a 12 MiB file would mean ~800 GB of hashing. Real kernels hash ~their size once.
MAX_HASHED_SECTION_BYTES = 1 << 30
#: patched_kernel_digest copies and patches this much of the kernel (patch() itself touches
#: only the setup header, below 0x240).
_PATCHED_HEAD = 0x10000


def initrd_address(
    kernel: Buffer, initrd_size: int, memory_size: int, acpi_data_size: int = ACPI_DATA_SIZE
) -> int:
    """Where QEMU places the initrd (``ramdisk_image``); raise KernelError if it cannot."""
    protocol = u16(kernel, 0x206, "boot protocol version", KernelError)
    if protocol < 0x200:
        raise KernelError(
            f"kernel boot protocol {protocol:#x} is older than 2.00 and cannot take an initrd"
        )
    if protocol >= 0x20C:
        xloadflags = u16(kernel, 0x236, "xloadflags", KernelError)
        initrd_max = _U32_MAX if xloadflags & 0x40 else 0x37FF_FFFF
    elif protocol >= 0x203:
        initrd_max = u32(kernel, 0x22C, "initrd_addr_max", KernelError) or 0x37FF_FFFF
    else:
        initrd_max = 0x37FF_FFFF

    lowmem = STABLE_MIN_MEMORY if memory_size < STABLE_MIN_MEMORY else 0x8000_0000
    below_4g = lowmem if memory_size >= lowmem else memory_size
    if acpi_data_size > below_4g:
        raise KernelError(
            f"memory_size {memory_size:#x} leaves no room below 4 GiB for QEMU's "
            f"{acpi_data_size:#x} bytes of ACPI data"
        )
    available = below_4g - acpi_data_size
    if initrd_max >= available:
        initrd_max = max(available - 1, 0)
    if initrd_size >= initrd_max:
        raise KernelError(
            f"initrd of {initrd_size} bytes does not fit below {initrd_max:#x} "
            f"with memory_size {memory_size:#x}"
        )
    return (initrd_max - initrd_size) & ~0xFFF & _U32_MAX


def patch(
    kernel: bytes, initrd_size: int, memory_size: int, acpi_data_size: int = ACPI_DATA_SIZE
) -> bytearray:
    """The kernel image after QEMU's setup-header patches (a copy; the input is untouched)."""
    if len(kernel) < MIN_KERNEL_LEN:
        raise KernelError(
            f"kernel image is {len(kernel)} bytes; a bzImage is at least {MIN_KERNEL_LEN:#x}"
        )
    if not 0 <= initrd_size <= _U32_MAX:
        raise KernelError(
            f"initrd of {initrd_size} bytes is too large: QEMU's boot protocol holds a 32-bit size"
        )
    kd = bytearray(kernel)
    protocol = int.from_bytes(kd[0x206:0x208], "little")
    if protocol < 0x200 or not kd[0x211] & 0x01:
        real_addr, cmdline_addr = 0x90000, 0x9A000
    else:
        real_addr, cmdline_addr = 0x10000, 0x20000

    if protocol >= 0x200:
        kd[0x210] = 0xB0  # type_of_loader: QEMU
    if protocol >= 0x201:
        kd[0x211] |= 0x80  # loadflags: CAN_USE_HEAP
        heap_end = max(cmdline_addr - real_addr - 0x200, 0)
        kd[0x224:0x228] = heap_end.to_bytes(4, "little")
    if protocol >= 0x202:
        kd[0x228:0x22C] = cmdline_addr.to_bytes(4, "little")
    else:
        kd[0x20:0x22] = (0xA33F).to_bytes(2, "little")
        kd[0x22:0x24] = ((cmdline_addr - real_addr) & 0xFFFF).to_bytes(2, "little")

    if initrd_size > 0:
        addr = initrd_address(kd, initrd_size, memory_size, acpi_data_size)
        kd[0x218:0x21C] = addr.to_bytes(4, "little")
        kd[0x21C:0x220] = initrd_size.to_bytes(4, "little")
    return kd


class PeLayout(NamedTuple):
    """What Authenticode needs of a PE/COFF image's headers (PE/COFF spec, "Optional Header
    Data Directories" and "Section Table"; offsets are into the file)."""

    #: Offset of the optional header's CheckSum (4 bytes, skipped by Authenticode).
    checksum: int
    #: Offset of the Certificate Table data-directory entry (8 bytes, skipped).
    cert_dir: int
    #: SizeOfHeaders: everything before it is hashed as headers.
    headers_end: int
    cert_addr: int
    cert_size: int
    #: (PointerToRawData, SizeOfRawData) of each section with data, by file offset.
    sections: tuple[tuple[int, int], ...]

    @property
    def data_end(self) -> int:
        """Where the last section's raw data ends, per the section table."""
        return max((ptr + size for ptr, size in self.sections), default=self.headers_end)


# IMAGE_NT_HEADERS offsets, relative to the "PE\0\0" signature / the optional header.
_E_LFANEW = 0x3C
_COFF_NUMBER_OF_SECTIONS = 4 + 2
_COFF_SIZE_OF_OPTIONAL_HEADER = 4 + 16
_OPTIONAL_HEADER = 4 + 20
_OPT_CHECKSUM = 64
_OPT_SIZE_OF_HEADERS = 60
_OPT_DATA_DIRECTORIES = {False: 96, True: 112}  # PE32, PE32+
_PE32_PLUS_MAGIC = 0x20B
_SECTION_HEADER_SIZE = 40
_SECTION_SIZE_OF_RAW_DATA = 16
_SECTION_POINTER_TO_RAW_DATA = 20


def pe_layout(data: Buffer, size: int) -> PeLayout:
    """Read the PE headers from ``data``; ``size`` is the whole file's length.

    Raises KernelError for a missing signature, a field beyond ``data`` or SizeOfHeaders that
    misses the data directories or the file.
    """

    def err(what: str) -> KernelError:
        return KernelError(f"kernel PE/COFF header: {what}")

    pe = u32(data, _E_LFANEW, "PE header offset (e_lfanew)", KernelError)
    if u32(data, pe, "PE signature", KernelError) != _PE_SIGNATURE:
        raise err(f"no PE signature at offset {pe:#x}: not an EFI-stub kernel")
    num_sections = u16(data, pe + _COFF_NUMBER_OF_SECTIONS, "number of sections", KernelError)
    opt_size = u16(data, pe + _COFF_SIZE_OF_OPTIONAL_HEADER, "optional header size", KernelError)
    opt = pe + _OPTIONAL_HEADER
    pe32_plus = u16(data, opt, "optional header magic", KernelError) == _PE32_PLUS_MAGIC
    checksum = opt + _OPT_CHECKSUM
    cert_dir = opt + _OPT_DATA_DIRECTORIES[pe32_plus] + 8 * _CERT_DIR_INDEX
    headers_end = u32(data, opt + _OPT_SIZE_OF_HEADERS, "SizeOfHeaders", KernelError)
    cert_addr = u32(data, cert_dir, "certificate table address", KernelError)
    cert_size = u32(data, cert_dir + 4, "certificate table size", KernelError)
    if not (checksum + 4 <= cert_dir and cert_dir + 8 <= headers_end <= size):
        raise err(
            f"SizeOfHeaders {headers_end:#x} does not cover the data directories "
            f"(certificate entry at {cert_dir:#x}) or exceeds the file ({size:#x} bytes)"
        )
    table = opt + opt_size
    # Only the two fields read below need to exist: the reference reads nothing else of an
    # entry, so a last entry cut short after PointerToRawData is still a valid input.
    sections = []
    for i in range(num_sections):
        entry = table + _SECTION_HEADER_SIZE * i
        raw_size = u32(data, entry + _SECTION_SIZE_OF_RAW_DATA, "SizeOfRawData", KernelError)
        raw_ptr = u32(data, entry + _SECTION_POINTER_TO_RAW_DATA, "PointerToRawData", KernelError)
        if raw_size:
            sections.append((raw_ptr, raw_size))
    sections.sort(key=lambda s: s[0])
    return PeLayout(checksum, cert_dir, headers_end, cert_addr, cert_size, tuple(sections))


def truncation_warning(kernel: Buffer) -> str | None:
    """A warning when the section table describes data past the end of the kernel file.

    Such a kernel (typically a download cut short) still gets the reference's digest, which
    hashes what is there; the warning says how much is missing. None for a whole kernel, or
    one whose headers cannot be read (measuring it raises the error instead).
    """
    try:
        end = pe_layout(kernel, len(kernel)).data_end
    except KernelError:
        return None
    if end <= len(kernel):
        return None
    return (
        f"kernel is {len(kernel)} bytes but its PE section table describes {end} bytes "
        f"({end - len(kernel)} bytes missing): the file looks truncated. It was measured as "
        "the reference measures it (hashing only the bytes present); check the download."
    )


def authenticode_sha384(image: Buffer, head: Buffer | None = None) -> bytes:
    """PE/COFF Authenticode SHA-384, with OVMF's zero padding of the size to 8 bytes.

    Odd but well-defined inputs get the reference's result: a section whose raw data runs
    past the end of the file is hashed up to the end of the file and still counted in full.

    ``head``, if given, replaces the image's first ``len(head)`` bytes (a patched copy), so
    a patched kernel need not be copied whole. Headers are then read from ``head`` only: a
    field beyond it raises KernelError.
    """
    full = memoryview(image)
    data = full if head is None else memoryview(head)  # headers are read from here
    size = len(full)

    def view(start: int, end: int) -> list[memoryview]:
        """Bytes [start, end) of the image (``head`` first), clipped to its end."""
        end = min(end, size)
        start = min(start, end)
        if end <= len(data):
            return [data[start:end]]
        if start >= len(data):
            return [full[start:end]]
        return [data[start:], full[len(data) : end]]

    pe = pe_layout(data, size)
    checksum, cert_dir, headers_end = pe.checksum, pe.cert_dir, pe.headers_end
    cert_addr, cert_size = pe.cert_addr, pe.cert_size

    h = hashlib.sha384()
    for part in (
        *view(0, checksum),
        *view(checksum + 4, cert_dir),
        *view(cert_dir + 8, headers_end),
    ):
        h.update(part)
    hashed = headers_end

    sections = pe.sections
    chunks = [view(ptr, ptr + raw_size) for ptr, raw_size in sections]
    if sum(len(part) for c in chunks for part in c) > MAX_HASHED_SECTION_BYTES:
        raise KernelError(
            "kernel PE/COFF header: "
            f"sections overlap so much that more than {MAX_HASHED_SECTION_BYTES} bytes of "
            f"section data would be hashed (file is {size:#x} bytes)"
        )
    for chunk, (_, raw_size) in zip(chunks, sections, strict=True):
        for part in chunk:
            h.update(part)
        hashed += raw_size

    if cert_addr and cert_size and size > hashed:
        trailing = size - hashed
        if trailing > cert_size:
            for part in view(hashed, hashed + trailing - cert_size):
                h.update(part)
    if size % 8:
        h.update(bytes(8 - size % 8))
    return h.digest()


def patched_kernel_digest(kernel: bytes, initrd_size: int, memory_size: int) -> bytes:
    """RTMR1 event 0 for this kernel, initrd size and guest memory size.

    Only the first 64 KiB (the setup and PE headers) are copied and patched; the rest is
    hashed in place. A kernel whose headers reach further gets a full patched copy.
    """
    if len(kernel) <= _PATCHED_HEAD:
        return authenticode_sha384(patch(kernel, initrd_size, memory_size))
    head = patch(kernel[:_PATCHED_HEAD], initrd_size, memory_size)
    try:
        return authenticode_sha384(kernel, head)
    except KernelError:
        # A header beyond the copy, or a malformed image: the full copy gives the result or
        # the error of the plain path.
        return authenticode_sha384(patch(kernel, initrd_size, memory_size))
