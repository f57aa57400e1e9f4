"""Whether the image directory is the VM's: its os_image_hash and its measurement document."""

from __future__ import annotations

from collections.abc import Sequence

from .context import ExplainContext
from .finding import Finding


def image_finding(ctx: ExplainContext) -> Finding | None:
    """The image directory against the image the VM (or the given VmConfig) declares."""
    check = ctx.image_hash
    declared = check.declared
    doc = ctx.declared
    directory = ctx.image.files.directory
    booted = ""
    whose = "its" if doc is None or doc.from_evidence else "the given VmConfig's"
    by_vm = bool(ctx.evidence.declared_image_hash())
    declares = "this VM declares" if by_vm else "the given VmConfig declares"
    if doc is not None and doc.error is None and doc.vm_equal and not doc.vm_differ:
        booted = (
            f"; the VM booted what it declared (its {_and(list(doc.vm_equal))} equal "
            f"{whose} measurement document's)"
            if doc.from_evidence
            else f"; the VM's {_and(list(doc.vm_equal))} equal {whose} measurement document's"
        )
    if check.status == "mismatch" and declared is not None and check.image_hash is not None:
        return _wrong_image(
            f"image: your image directory is not the image {declares} "
            f"(vm_config os_image_hash {_short(declared)}; {directory} has "
            f"{_short(check.image_hash)}, the {check.image_hash_source}){booted}",
            declared,
        )
    if doc is not None and doc.error is None and doc.image_differ and declared is not None:
        parts = _and(list(doc.image_differ))
        return _wrong_image(
            f"image: your image directory is not the image {declares} "
            f"(os_image_hash {_short(declared)}): its {parts} "
            f"{'differs' if len(doc.image_differ) == 1 else 'differ'} from that "
            f"image's measurement document{booted}",
            declared,
        )
    if check.status == "match" and declared is not None:
        return Finding(
            "image",
            f"image: {directory} is the image {declares} (os_image_hash "
            f"{_short(declared)}){booted}",
            "proven",
            lead=False,
        )
    if doc is not None and doc.error is None and not doc.image_differ:
        return Finding(
            "image",
            f"image: {directory}'s firmware, kernel, cmdline and initrd equal the VM's "
            f"measurement document's{booted}",
            "proven",
            lead=False,
        )
    # Unknown either way: say so only when everything the image decides differs.
    image_parts = [ctx.registers[n] for n in ("mrtd", "rtmr1", "rtmr2") if ctx.registers[n].actual]
    if len(image_parts) < 2 or any(r.status != "mismatch" for r in image_parts):
        return None
    names = _and([r.name for r in image_parts])
    if declared is not None:
        settle = (
            f"the image the VM declares: os_image_hash {declared.hex()} (the SHA-256 of its "
            f"sha256sum.txt); {directory} has no sha256sum.txt or digest.txt to check"
        )
    else:
        settle = "the image directory the VM was launched from"
    return Finding(
        "image",
        f"image: {directory} is most likely not this VM's image: {names} "
        f"{'both' if len(image_parts) == 2 else 'all'} differ, and each depends on the "
        f"image's files ({ctx.fw}, {ctx.kernel}, {ctx.initrd}, cmdline)",
        settle=settle,
    )


def declared_finding(ctx: ExplainContext) -> Finding | None:
    """The evidence against the measurement document (vm_config.tdx_measurement)."""
    doc = ctx.declared
    if doc is None:
        return None
    what = (
        "the VM's measurement document (vm_config.tdx_measurement)"
        if doc.from_evidence
        else "the measurement document of the given VmConfig (tdx_measurement)"
    )
    if doc.error is not None:
        return Finding(
            "declared",
            f"declared: {what} does not check out: {doc.error}",
            "proven",
            settle="the VmConfig as the VMM issued it",
        )
    if not doc.vm_differ:
        return None
    regs = _and(list(doc.vm_differ))
    verb = "differs" if len(doc.vm_differ) == 1 else "differ"
    if doc.from_evidence:
        message = (
            f"declared: the VM did not boot what it declares: its {regs} {verb} from its "
            "own measurement document's (vm_config.tdx_measurement, bound to its "
            "os_image_hash)"
        )
    else:
        message = (
            f"declared: the evidence's {regs} {verb} from {what}: the VM did not boot "
            "that image, or this VmConfig is not the VM's"
        )
    return Finding("declared", message, "proven")


def _short(value: bytes) -> str:
    return value.hex()[:16] + "…"


def _wrong_image(message: str, declared: bytes) -> Finding:
    """A proof that the image directory is not the one whose os_image_hash is ``declared``."""
    return Finding(
        "image",
        message,
        "proven",
        "image",
        declared.hex(),
        settle="diagnose against the image directory whose sha256sum.txt hashes to "
        f"{declared.hex()}",
    )


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
