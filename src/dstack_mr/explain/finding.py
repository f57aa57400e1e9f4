"""One explanation of a difference: what it says, and whether it is proven or a hypothesis."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Finding:
    """One explanation.

    ``status`` is ``proven`` (a recomputation with ``parameter`` = ``value`` reproduced the
    actual digest, or a direct comparison showed it) or ``hypothesis``. ``tried`` lists what
    was recomputed without success, ``settle`` what evidence would decide, ``proves_equal``
    the events a register-level proof shows equal. ``lead`` marks findings that may head the
    report (causes, not side notes).
    """

    subject: str
    message: str
    status: str = "hypothesis"
    parameter: str | None = None
    value: str | None = None
    register: str | None = None
    tried: tuple[str, ...] = ()
    settle: str | None = None
    proves_equal: tuple[str, ...] = ()
    lead: bool = True

    @property
    def proven(self) -> bool:
        return self.status == "proven"

    @property
    def reproduced(self) -> bool:
        """A recomputation with a changed input reproduced the actual value."""
        return self.proven and self.parameter is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "message": self.message,
            "status": self.status,
            "register": self.register,
            "parameter": self.parameter,
            "value": self.value,
            "reproduced": self.reproduced,
            "tried": list(self.tried),
            "settle": self.settle,
            "proves_equal": list(self.proves_equal),
        }
