"""Image directories: safe path resolution, VmConfig -> Machine, and a per-image cache.

A verifier checks many VMs built from few images. :class:`Image` reads ``metadata.json``
once, hashes what depends only on the image (TDVF parse, MRTD per page-add order, initrd
digest and size, cmdline digest) and computes per request only what depends on the
``VmConfig`` (TD HOB, the patched kernel's Authenticode digest, ACPI tables).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import attrs

from . import kernel as kernel_mod
from . import tdvf as tdvf_mod
from ._lru import LruCache
from .acpi import AcpiDumper, AcpiSource, CachedAcpiSource
from .acpi_log import AcpiDigests
from .config import (
    ImageInfo,
    OvmfVariant,
    VmConfig,
    extract_version_from_image_name,
    ovmf_variant_for_image,
    ovmf_variant_for_version,
    version_rules_disagree,
)
from .errors import ConfigError, ImageError, KernelError, PathEscapeError
from .files import MAX_FIRMWARE_SIZE, MAX_KERNEL_SIZE, BackgroundHash, read_file, reading
from .machine import (
    Machine,
    MeasurementDetails,
    checked_cmdline_digest,
    compute,
    kernel_warnings_of,
)

METADATA = "metadata.json"
#: metadata.json is a few hundred bytes; refuse to parse anything absurdly large.
MAX_METADATA_SIZE = 1 << 20


def resolve_inside(base: str | os.PathLike[str], name: str, what: str) -> str:
    """``base/name`` as the reference joins it, refusing names that leave ``base``.

    Absolute names, ``..`` components and symlinks that lead out of ``base`` raise
    PathEscapeError: a verifier must not be made to read a file of the host or of another
    image. The returned path is the plain join (what the dumper is given), not the resolved
    one.
    """
    if not name or "\0" in name:
        raise PathEscapeError(f"{what} {name!r} is empty or contains a NUL byte")
    if os.path.isabs(name) or any(part == ".." for part in Path(name).parts):
        raise PathEscapeError(
            f"{what} {name!r} must be a relative path inside {os.fspath(base)!r} "
            "(no absolute paths, no '..')"
        )
    joined = os.path.join(os.fspath(base), name)
    try:
        real_base = os.path.realpath(os.fspath(base) or ".")
        real = os.path.realpath(joined)
    except (UnicodeError, ValueError) as exc:  # lone surrogates, NUL in the base
        raise PathEscapeError(f"{what} {name!r} under {os.fspath(base)!r}: {exc}") from None
    if os.path.commonpath([real_base, real]) != real_base:
        raise PathEscapeError(
            f"{what} {name!r} resolves to {real}, outside {real_base} (symlink escape)"
        )
    return joined


def rust_parent(path: str) -> str:
    """``Path::parent`` as Rust computes it, so joined names match the reference's argv.

    Rust drops interior ``.`` components and trailing separators: the parent of
    ``/d/./metadata.json`` is ``/d`` and of ``metadata.json`` is the empty path.
    """
    rooted = path.startswith("/")
    ends: list[int] = []  # end offset of each component after the root
    pos = 1 if rooted else 0
    for i, part in enumerate(path[pos:].split("/")):
        start = pos
        pos += len(part) + 1
        if not part or (part == "." and not (i == 0 and not rooted)):
            continue
        ends.append(start + len(part))
    if len(ends) < 2:
        return "/" if rooted else ""
    return path[: ends[-2]]


def load_image_info(image_dir: str | os.PathLike[str]) -> ImageInfo:
    return read_image_info(os.path.join(os.fspath(image_dir), METADATA))


def read_image_info(path: str | os.PathLike[str]) -> ImageInfo:
    """Parse a metadata.json, refusing anything absurdly large before reading it."""
    with reading(path, "image metadata"), open(path, "rb") as f:
        text = f.read(MAX_METADATA_SIZE + 1)
    if len(text) > MAX_METADATA_SIZE:
        raise ImageError(
            f"{os.fspath(path)} is larger than {MAX_METADATA_SIZE} bytes; metadata.json is "
            "expected to be small"
        )
    try:
        return ImageInfo.from_json(text)
    except ImageError as exc:
        raise ImageError(f"{os.fspath(path)}: {exc}") from None


@attrs.frozen
class ImageFiles:
    """The three files of an image, as paths joined onto the image directory."""

    directory: str
    info: ImageInfo
    firmware: str
    kernel: str
    initrd: str

    @property
    def cmdline(self) -> str:
        """What is measured: the image cmdline plus ``initrd=initrd``, as the reference does."""
        return f"{self.info.cmdline} initrd=initrd"

    @classmethod
    def from_metadata(cls, metadata: str | os.PathLike[str]) -> ImageFiles:
        return cls.from_info(rust_parent(os.fspath(metadata)), read_image_info(metadata))

    @classmethod
    def from_dir(cls, image_dir: str | os.PathLike[str]) -> ImageFiles:
        return cls.from_info(os.fspath(image_dir), load_image_info(image_dir))

    @classmethod
    def from_info(cls, directory: str, info: ImageInfo) -> ImageFiles:
        return cls(
            directory=directory,
            info=info,
            firmware=resolve_inside(directory, info.bios, "metadata 'bios'"),
            kernel=resolve_inside(directory, info.kernel, "metadata 'kernel'"),
            initrd=resolve_inside(directory, info.initrd, "metadata 'initrd'"),
        )


def image_dir_for(vm: VmConfig, image_base_dir: str | os.PathLike[str]) -> str:
    """``image_base_dir/vm.image``, refusing names that leave the base directory."""
    if not vm.image:
        raise ConfigError("vm_config.image is empty; pass the image directory directly")
    return resolve_inside(image_base_dir, vm.image, "vm_config.image")


def resolve_ovmf_variant(vm: VmConfig, info: ImageInfo) -> OvmfVariant:
    """The verifier's order: vm_config.ovmf_variant > metadata ovmf_variant > metadata version
    (when valid) > version in the image name > pre202505."""
    return variant_resolution(vm, info).variant


@attrs.frozen
class VariantResolution:
    """Which OVMF layout was picked, by which rule, and whether upstream would differ.

    ``upstream_disagrees`` is true when a version rule (the seed's) picked stable202505 for a
    version upstream master maps to pre202505 (0.5.10 <= v < 0.6.0 and v >= 0.6.1): the
    configuration cannot settle it, the event log's RTMR0 layout must.
    """

    variant: OvmfVariant
    rule: str
    upstream_disagrees: bool = False
    #: The dstack OS version a version rule decided by.
    version: str | None = None

    @property
    def note(self) -> str | None:
        """What to tell the operator when the two version rules disagree, else None."""
        if not self.upstream_disagrees:
            return None
        return (
            f"OVMF layout stable202505 from version {self.version} (the reference's rule); "
            "upstream dstack uses pre202505 for every version. Pass --ovmf-variant to choose; "
            "a real event log shows which one the VM has."
        )

    @property
    def description(self) -> str:
        if not self.upstream_disagrees:
            return self.rule
        return (
            f"{self.rule}; upstream dstack would pick pre202505 for this version, so the "
            "event log decides"
        )


def variant_resolution(vm: VmConfig, info: ImageInfo) -> VariantResolution:
    """:func:`resolve_ovmf_variant` with the rule that decided it."""
    if vm.ovmf_variant is not None:
        return VariantResolution(vm.ovmf_variant, "vm_config.ovmf_variant")
    if info.ovmf_variant is not None:
        return VariantResolution(info.ovmf_variant, "metadata.json ovmf_variant")
    if info.version:
        try:
            variant = ovmf_variant_for_version(info.version)
        except ConfigError:
            pass
        else:
            return VariantResolution(
                variant,
                f"metadata.json version {info.version}",
                version_rules_disagree(info.version),
                info.version,
            )
    version = extract_version_from_image_name(vm.image) if vm.image else None
    if version is not None:
        return VariantResolution(
            ovmf_variant_for_image(vm.image),
            f"image name {vm.image!r}",
            version_rules_disagree(version),
            version,
        )
    return VariantResolution(OvmfVariant.PRE202505, "default")


def image_variant(
    info: ImageInfo, *, forced: OvmfVariant | None = None, os_version: str | None = None
) -> VariantResolution:
    """The OVMF layout to measure an image with, outside any VmConfig (``measure``): the
    ``forced`` variant > the given dstack ``os_version`` > metadata.json's ovmf_variant >
    its version > pre202505. A version that is not ``X.Y.Z[.SUFFIX]`` raises ConfigError
    here (an operator typed it, or the image's own metadata is wrong)."""
    if forced is not None:
        return VariantResolution(forced, "--ovmf-variant")
    if os_version is not None:
        return VariantResolution(
            ovmf_variant_for_version(os_version),
            f"--dstack-os-version {os_version}",
            version_rules_disagree(os_version),
            os_version,
        )
    if info.ovmf_variant is not None:
        return VariantResolution(info.ovmf_variant, "metadata.json ovmf_variant")
    if info.version:
        return VariantResolution(
            ovmf_variant_for_version(info.version),
            f"metadata.json version {info.version}",
            version_rules_disagree(info.version),
            info.version,
        )
    return VariantResolution(OvmfVariant.PRE202505, "default")


def ovmf_variant_with_source(vm: VmConfig, info: ImageInfo) -> tuple[OvmfVariant, str]:
    """:func:`resolve_ovmf_variant` and, for reports, which rule decided it (and whether the
    seed's and upstream's version rules disagree)."""
    r = variant_resolution(vm, info)
    return r.variant, r.description


def machine_for(vm: VmConfig, files: ImageFiles, variant: OvmfVariant | None = None) -> Machine:
    """The Machine the reference's ``diagnose`` and the dstack verifier build from a VmConfig.

    ``qemu_single_pass_add_pages`` is passed unchanged as ``two_pass_add_pages`` (sic): that is
    what the verifier does, and real VMs are judged by the verifier.
    """
    return vm_machine(
        vm,
        ovmf_variant=variant if variant is not None else resolve_ovmf_variant(vm, files.info),
        firmware=files.firmware,
        kernel=files.kernel,
        initrd=files.initrd,
        kernel_cmdline=files.cmdline,
    )


def vm_machine(
    vm: VmConfig,
    *,
    ovmf_variant: OvmfVariant,
    firmware: str = "",
    kernel: str = "",
    initrd: str = "",
    kernel_cmdline: str = "",
) -> Machine:
    """The Machine of ``vm`` with the given image files (left empty where only QEMU's options
    and the dumper argv are needed, as in lite mode: the paths are then never read)."""
    return Machine(
        cpu_count=vm.cpu_count,
        memory_size=vm.memory_size,
        firmware=firmware,
        kernel=kernel,
        initrd=initrd,
        kernel_cmdline=kernel_cmdline,
        two_pass_add_pages=vm.qemu_single_pass_add_pages,
        pic=vm.pic,
        qemu_version=vm.qemu_version,
        pci_hole64_size=vm.pci_hole64_size if vm.pci_hole64_size > 0 else None,
        hugepages=vm.hugepages,
        num_gpus=vm.num_gpus,
        num_nvswitches=vm.num_nvswitches,
        num_nics=vm.num_nics,
        num_verity_volumes=vm.num_verity_volumes,
        swtpm=vm.swtpm,
        hotplug_off=vm.hotplug_off,
        root_verity=True,
        host_share_mode=vm.host_share_mode,
        ovmf_variant=ovmf_variant,
    )


class Image:
    """An image loaded once and measured for many VmConfigs; safe to share between threads.

    Loading reads the firmware and kernel (kept in memory: MRTD and the per-request kernel
    digest need them), streams the initrd through SHA-384 (only its size and digest are
    kept) and digests the cmdline. Per request only what depends on the configuration is
    computed: the TD HOB, the ACPI tables and, when the initrd address is new, the patched
    kernel's Authenticode digest. Cached, each bounded:

    - MRTD, per page-add order (two entries at most);
    - the patched kernel's digest per initrd address (``kernel_cache_size``, LRU): all
      memory sizes from 2.75 GiB up share one address; below, it moves with the size;
    - the ACPI tables blob per dumper invocation, i.e. argv + ``QEMU_ACPI_COMPAT_VER``
      (``acpi_cache_size``, LRU, :class:`CachedAcpiSource`).

    Thread safety: all mutable state is these private caches (:class:`LruCache`), each behind
    a lock; cached values are immutable, so readers never see a partial result, and threads
    asking for the same entry at once wait for one computation (one dumper run per
    invocation) instead of repeating it. There is no global state:
    two Images share nothing. Results equal ``self.machine(vm).measure_with_logs(acpi)``.
    """

    def __init__(
        self,
        files: ImageFiles,
        acpi: AcpiSource | None = None,
        *,
        kernel_cache_size: int = 64,
        acpi_cache_size: int = 64,
    ) -> None:
        if kernel_cache_size < 1 or acpi_cache_size < 1:
            raise ConfigError("Image cache sizes must be at least 1")
        self.files = files
        # The initrd hashes on a second thread while the firmware and kernel load.
        with BackgroundHash(files.initrd, "initrd") as pending:
            self.tdvf = tdvf_mod.parse(read_file(files.firmware, "firmware", MAX_FIRMWARE_SIZE))
            self.kernel = read_file(files.kernel, "kernel", MAX_KERNEL_SIZE)
            self.cmdline_digest = checked_cmdline_digest(files.cmdline)
            self.initrd_size, self.initrd_digest = pending.result()
        self.acpi: AcpiSource = CachedAcpiSource(acpi or AcpiDumper(), acpi_cache_size)
        self._mrtd: LruCache[bool, bytes] = LruCache(2)
        self._kernel_digests: LruCache[tuple[int, int], bytes] = LruCache(kernel_cache_size)

    @classmethod
    def load(
        cls,
        image_dir: str | os.PathLike[str],
        acpi: AcpiSource | None = None,
        *,
        kernel_cache_size: int = 64,
        acpi_cache_size: int = 64,
    ) -> Image:
        """Read ``image_dir/metadata.json`` and the files it names (each checked to stay
        inside ``image_dir``). ``acpi`` defaults to running the dumper (cached per
        invocation)."""
        return cls(
            ImageFiles.from_dir(image_dir),
            acpi,
            kernel_cache_size=kernel_cache_size,
            acpi_cache_size=acpi_cache_size,
        )

    @property
    def info(self) -> ImageInfo:
        return self.files.info

    def __repr__(self) -> str:
        version = f" version={self.info.version!r}" if self.info.version else ""
        return (
            f"<Image {self.files.directory!r}{version} initrd={self.initrd_size} bytes, "
            f"cached: {len(self._mrtd)} MRTD, {len(self._kernel_digests)}/"
            f"{self._kernel_digests.maxsize} kernel digests, {self.acpi!r}>"
        )

    def mrtd(self, two_pass: bool) -> bytes:
        return self._mrtd.get_or_compute(two_pass, lambda: self.tdvf.mrtd(two_pass))

    @functools.cached_property
    def kernel_warnings(self) -> tuple[str, ...]:
        """What every result says about the kernel file (it never changes: read once)."""
        return kernel_warnings_of(self.kernel)

    def machine(self, vm: VmConfig, variant: OvmfVariant | None = None) -> Machine:
        return machine_for(vm, self.files, variant)

    def measure(
        self, vm: VmConfig, acpi: AcpiSource | None = None, variant: OvmfVariant | None = None
    ) -> MeasurementDetails:
        """Same result as ``self.machine(vm).measure_with_logs(acpi)``, from cached parts."""
        return self.measure_machine(self.machine(vm, variant), acpi)

    def measure_machine(
        self, machine: Machine, acpi: AcpiSource | AcpiDigests | None = None
    ) -> MeasurementDetails:
        """Same result as ``machine.measure_with_logs(acpi)`` for a machine of this image's
        files (any cmdline); ``acpi``, if given, is used uncached instead of the image's (it
        may also be the three ACPI digests themselves)."""
        files = (machine.firmware, machine.kernel, machine.initrd)
        if files != (self.files.firmware, self.files.kernel, self.files.initrd):
            raise ConfigError(
                f"machine measures {files}, not this image's files "
                f"({self.files.firmware}, {self.files.kernel}, {self.files.initrd})"
            )
        opts = machine.versioned_options()
        return compute(
            machine,
            self.tdvf,
            self.kernel,
            self.initrd_size,
            self.initrd_digest,
            acpi if acpi is not None else self.acpi,
            mrtd=self.mrtd(opts.two_pass_add_pages),
            cmdline_sha384=self.cmdline_digest
            if machine.kernel_cmdline == self.files.cmdline
            else None,
            kernel_digest=self._kernel_digest,
            kernel_warnings=self.kernel_warnings,
        )

    def kernel_digest(self, memory_size: int) -> bytes:
        """RTMR1's kernel event for this image's kernel and initrd at ``memory_size`` (cached
        per initrd address, like :meth:`measure`)."""
        return self._kernel_digest(self.kernel, self.initrd_size, memory_size)

    def _kernel_digest(self, kernel: bytes, initrd_size: int, memory_size: int) -> bytes:
        # QEMU's patch differs between memory sizes only in the initrd address (no initrd:
        # not at all). Anything the address cannot be computed for takes the uncached path,
        # which raises the reference's error.
        try:
            address = (
                kernel_mod.initrd_address(kernel, initrd_size, memory_size) if initrd_size else -1
            )
        except KernelError:
            return kernel_mod.patched_kernel_digest(kernel, initrd_size, memory_size)
        return self._kernel_digests.get_or_compute(
            (initrd_size, address),
            lambda: kernel_mod.patched_kernel_digest(kernel, initrd_size, memory_size),
        )
