"""The app identity a dstack CVM measured into RTMR3, read as dstack's verifier reads it.

dstack's guest extends named runtime events into RTMR3 while it boots: ``app-id``,
``compose-hash``, ``instance-id``, ``key-provider``, ... up to ``system-ready``; events after
``system-ready`` are the application's own and are not part of the app identity. The values
are trustworthy only when the RTMR3 events replay to the quote's RTMR3 (checked by the
caller) and each event's digest is that of its payload (checked by the event-log parser).

``mr_system`` and ``mr_aggregated`` are dstack's summary digests (SHA-256) used by its KMS
policy: the boot measurements plus the key provider, and everything including RTMR3.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import attrs

from .digest import replay
from .eventlog import DSTACK_RUNTIME_EVENT_TYPE, Event
from .quote import TdxQuote

__all__ = ["AppInfo", "KeyProvider", "app_info", "runtime_events"]

_SYSTEM_READY = "system-ready"
_ZERO48 = bytes(48)


@attrs.frozen
class KeyProvider:
    """The decoded ``key-provider`` payload (``{"name": "kms", "id": "..."}``)."""

    name: str
    id: str


@attrs.frozen
class AppInfo:
    """dstack's ``AppInfo``: byte fields are empty when the event is absent."""

    app_id: bytes
    compose_hash: bytes
    instance_id: bytes
    device_id: bytes
    mr_system: bytes
    mr_aggregated: bytes
    os_image_hash: bytes
    key_provider_info: bytes
    init_script_hashes: tuple[bytes, ...]
    key_provider: KeyProvider | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of dstack-verifier's ``app_info`` (hex strings)."""
        return {
            "app_id": self.app_id.hex(),
            "compose_hash": self.compose_hash.hex(),
            "instance_id": self.instance_id.hex(),
            "device_id": self.device_id.hex(),
            "mr_system": self.mr_system.hex(),
            "mr_aggregated": self.mr_aggregated.hex(),
            "os_image_hash": self.os_image_hash.hex(),
            "key_provider_info": self.key_provider_info.hex(),
            "init_script_hashes": [h.hex() for h in self.init_script_hashes],
        }


def runtime_events(events: Sequence[Event]) -> tuple[Event, ...]:
    """The dstack runtime events of RTMR3, in log order."""
    return tuple(e for e in events if e.imr == 3 and e.event_type == DSTACK_RUNTIME_EVENT_TYPE)


def _boot_events(events: Sequence[Event]) -> list[Event]:
    out = []
    for e in events:
        if e.event == _SYSTEM_READY:
            break
        out.append(e)
    return out


def _payload(events: Sequence[Event], name: str) -> bytes:
    return next((e.event_payload for e in events if e.event == name), b"")


def _key_provider(info: bytes) -> KeyProvider | None:
    try:
        obj = json.loads(info.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if (
        isinstance(obj, dict)
        and isinstance(obj.get("name"), str)
        and isinstance(obj.get("id"), str)
    ):
        return KeyProvider(obj["name"], obj["id"])
    return None


def app_info(quote: TdxQuote, events: Sequence[Event], os_image_hash: bytes = b"") -> AppInfo:
    """The app identity from the RTMR3 events of ``events`` and the quote's registers.

    ``os_image_hash`` is the VmConfig's, as dstack reports it (the ``os-image-hash`` event
    dstack 0.6 measures is another digest: real 0.6.0 captures differ from their VmConfig's).
    """
    rt = runtime_events(events)
    boot = _boot_events(rt)
    key_info = _payload(boot, "key-provider")
    mr_key_provider = hashlib.sha256(key_info).digest() if key_info else bytes(32)
    mr_system = hashlib.sha256(
        quote.mrtd + quote.rtmr0 + quote.rtmr1 + quote.rtmr2 + mr_key_provider
    ).digest()
    agg = hashlib.sha256(
        quote.mrtd + quote.rtmr0 + quote.rtmr1 + quote.rtmr2 + replay(e.digest for e in rt)
    )
    # Owner fields join the aggregate only when set, so VMs without them keep one value.
    if (quote.mr_config_id, quote.mr_owner, quote.mr_owner_config) != (_ZERO48,) * 3:
        agg.update(quote.mr_config_id + quote.mr_owner + quote.mr_owner_config)
    return AppInfo(
        app_id=_payload(boot, "app-id"),
        compose_hash=_payload(boot, "compose-hash"),
        instance_id=_payload(boot, "instance-id"),
        device_id=hashlib.sha256(b"").digest(),
        mr_system=mr_system,
        mr_aggregated=agg.digest(),
        os_image_hash=os_image_hash,
        key_provider_info=key_info,
        init_script_hashes=tuple(e.event_payload for e in boot if e.event == "init-script-hash"),
        key_provider=_key_provider(key_info),
    )
