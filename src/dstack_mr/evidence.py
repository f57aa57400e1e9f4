"""What the VM produced: Evidence (quote, event log, registers, VmConfig) and checks on its parts.

Every part is optional and parts from several files merge into one :class:`Evidence`
(:mod:`dstack_mr.evidence_files` reads them); :mod:`dstack_mr.diagnose` compares it with
what a configuration should measure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._binary import from_hex
from .attestation import Attestation
from .config import VmConfig, parse_json
from .digest import DIGEST_LEN, replay
from .errors import ConfigError, EvidenceError
from .eventlog import Event
from .quote import TdxQuote

__all__ = [
    "UPSTREAM_VM_CONFIG_KEYS",
    "Evidence",
    "load_vm_config",
    "parse_register_hex",
    "reject_attestation",
]

#: VmConfig keys upstream dstack defines that this version does not model (SPEC-UPSTREAM §1):
#: known, so never reported as unknown.
UPSTREAM_VM_CONFIG_KEYS = frozenset(
    {
        "num_nics",
        "num_verity_volumes",
        "swtpm",
        "tdx_attestation_variant",
        "tdx_measurement",
        "sev_snp_measurement",
        "mr_config",
        "gcp_measurement",
        "aws_measurement",
        "spec_version",
    }
)


def load_vm_config(raw: Mapping[str, Any], what: str = "VmConfig") -> tuple[VmConfig, list[str]]:
    """A VmConfig from its JSON object, and warnings about it.

    ``memory_size`` is required (without it every memory-dependent digest would be computed
    for 0 bytes). Keys neither this library nor upstream dstack defines are ignored, as serde
    ignores them, but named in a warning: a misspelt key silently takes its default.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what}: expected a JSON object, got {type(raw).__name__}")
    if "memory_size" not in raw:
        raise ConfigError(
            f"{what} has no 'memory_size' field; it is required (bytes, e.g. 2147483648 for 2 GiB)"
        )
    known = {f.name for f in attrs.fields(VmConfig)} | UPSTREAM_VM_CONFIG_KEYS
    unknown = sorted(str(k) for k in raw if k not in known)
    warnings = []
    if unknown:
        warnings.append(
            f"{what}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} ignored (misspelt? their intended values "
            "took their defaults)"
        )
    return VmConfig.from_dict(raw), warnings


@attrs.frozen
class Evidence:
    """What the VM produced. Every part is optional; more parts allow a deeper diagnosis.

    ``registers`` are values the operator typed (``--actual-rtmr0``); ``stated_registers``
    come from an Info/tcb_info response (not signed, unlike a quote). ``vm_config_raw`` is the
    VM's own ``vm_config`` object, for what it declares beyond :class:`VmConfig`
    (``os_image_hash``, ``tdx_measurement``). ``notes`` say what is unusual about the evidence
    (e.g. a GetQuote response whose quote is null).
    """

    quote: TdxQuote | None = attrs.field(default=None, repr=lambda q: "<quote>" if q else "None")
    events: tuple[Event, ...] | None = attrs.field(
        default=None, repr=lambda e: "None" if e is None else f"<{len(e)} events>"
    )
    registers: Mapping[str, bytes] = attrs.field(factory=dict)
    stated_registers: Mapping[str, bytes] = attrs.field(factory=dict, repr=False)
    vm_config: VmConfig | None = None
    sources: tuple[str, ...] = ()
    vm_config_raw: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def merge(self, other: Evidence) -> Evidence:
        """Combine two pieces of evidence; a part given twice must not disagree."""
        if self.quote is not None and other.quote is not None and self.quote != other.quote:
            raise EvidenceError("two different quotes were given")
        if self.events is not None and other.events is not None and self.events != other.events:
            raise EvidenceError("two different event logs were given")
        return Evidence(
            quote=self.quote or other.quote,
            events=self.events if self.events is not None else other.events,
            registers={**other.registers, **self.registers},
            stated_registers={**other.stated_registers, **self.stated_registers},
            vm_config=self.vm_config or other.vm_config,
            sources=self.sources + other.sources,
            vm_config_raw=self.vm_config_raw
            if self.vm_config_raw is not None
            else other.vm_config_raw,
            notes=self.notes + other.notes,
            warnings=self.warnings + other.warnings,
        )

    @classmethod
    def from_attestation(cls, att: Attestation) -> Evidence:
        vm: VmConfig | None = None
        warnings: list[str] = []
        if att.vm_config is not None:
            vm, warnings = load_vm_config(att.vm_config, "the attestation's vm_config")
        notes = []
        if att.quote is None and att.source == "guest-agent GetQuote response":
            notes.append(
                'the GetQuote response has no quote ("quote" is null or empty): nothing in it '
                "is signed"
            )
        return cls(
            quote=att.quote,
            events=att.events,
            stated_registers=dict(att.registers),
            vm_config=vm,
            sources=(att.source,),
            vm_config_raw=att.vm_config,
            notes=tuple(notes),
            warnings=tuple(warnings),
        )

    def actual(self, register: str) -> tuple[bytes, str] | None:
        """The best available actual value of a register and where it came from."""
        if register in self.registers:
            return self.registers[register], f"--actual-{register}"
        if self.quote is not None:
            return getattr(self.quote, register), "quote"
        if register in self.stated_registers:
            return self.stated_registers[register], "tcb_info"
        if self.events is not None and register.startswith("rtmr"):
            imr = int(register[4:])
            if any(e.imr == imr for e in self.events):
                return replay(e.digest for e in self.events if e.imr == imr), "event log replay"
        return None

    def declared_image_hash(self) -> bytes:
        """``os_image_hash`` as the VM's own vm_config declares it (empty when it does not)."""
        if self.vm_config is not None and self.vm_config.os_image_hash:
            return self.vm_config.os_image_hash
        return b""


#: Keys that make a JSON object an attestation (GetQuote / Info response, tcb_info, verifier
#: input) rather than a bare quote, event log or VmConfig.
_ATTESTATION_KEYS = ("quote", "event_log", "tcb_info", "attestation")


def reject_attestation(data: bytes, what: str) -> None:
    """Raise a one-line error naming ``--attestation`` when ``data`` is an attestation
    response given where only one of its parts (quote, event log, VmConfig) belongs."""
    head = data.lstrip()[:1]
    if head != b"{":
        return
    try:
        obj = parse_json(data, what, EvidenceError)
    except EvidenceError:
        return  # not JSON after all: the part's own parser says what is wrong
    if not isinstance(obj, Mapping):
        return
    keys = [k for k in _ATTESTATION_KEYS if k in obj]
    if keys:
        raise EvidenceError(
            f"{what} is an attestation response (it has {', '.join(repr(k) for k in keys)}), "
            "not a bare part of one; use --attestation FILE"
        )


def parse_register_hex(text: str, what: str) -> bytes:
    """A 48-byte register value from hex: surrounding whitespace and a leading ``0x`` are
    ignored (as by the reference's ``trim().trim_start_matches("0x")``), nothing else."""
    s = text.strip()
    while s.startswith("0x"):
        s = s[2:]
    value = from_hex(s)
    if value is None or len(value) != DIGEST_LEN:
        raise EvidenceError(
            f"{what}: expected {DIGEST_LEN} bytes as {2 * DIGEST_LEN} hex digits, got {text!r}"
        )
    return value
