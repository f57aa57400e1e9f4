"""Event logs as a VM would write them, built from expected measurements (for tests)."""

from __future__ import annotations

from dstack_mr.event_identity import simulated_event as vm_event
from dstack_mr.event_identity import simulated_log as events_of

__all__ = ["events_of", "vm_event"]
