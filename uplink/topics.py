"""The topic tree of one gateway (DESIGN.md section 7).

Everything lives under `<prefix>/<site>/<gateway>/`: tickets go out on `tickets/opened`,
`tickets/updated` (enrichment and annotations) and `tickets/transition` (state changes), alarm
flood incidents on `incidents/opened|updated|transition`, the retained `status` says online or
offline (the Will), commands come in on `cmd/<verb>`. See docs/TICKETS.md for the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

_FORBIDDEN_IN_LEVEL = frozenset("/+#\x00")


def _check_level(what: str, value: str) -> None:
    """A site, gateway or asset id is exactly one topic level and no wildcard."""
    if not value or _FORBIDDEN_IN_LEVEL & set(value):
        raise ValueError(f"{what} {value!r} cannot be used as an MQTT topic level")


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    site: str
    gateway: str

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"topic prefix {self.prefix!r} must not be empty or start/end in /")
        if "+" in self.prefix or "#" in self.prefix:
            raise ValueError(f"topic prefix {self.prefix!r} must not contain wildcards")
        _check_level("site", self.site)
        _check_level("gateway", self.gateway)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def tickets_opened(self) -> str:
        return f"{self.base}/tickets/opened"

    @property
    def tickets_updated(self) -> str:
        return f"{self.base}/tickets/updated"

    @property
    def tickets_transition(self) -> str:
        return f"{self.base}/tickets/transition"

    @property
    def incidents_opened(self) -> str:
        return f"{self.base}/incidents/opened"

    @property
    def incidents_updated(self) -> str:
        return f"{self.base}/incidents/updated"

    @property
    def incidents_transition(self) -> str:
        return f"{self.base}/incidents/transition"

    @property
    def incidents_filter(self) -> str:
        return f"{self.base}/incidents/#"

    @property
    def tickets_filter(self) -> str:
        """Every ticket topic, for the central system's subscription."""
        return f"{self.base}/tickets/#"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    def summary(self, asset: str) -> str:
        _check_level("asset", asset)
        return f"{self.base}/summaries/{asset}"

    def cmd(self, verb: str) -> str:
        _check_level("command verb", verb)
        return f"{self.base}/cmd/{verb}"

    @property
    def cmd_filter(self) -> str:
        """The gateway's one subscription: every command verb."""
        return f"{self.base}/cmd/+"

    def verb_of(self, topic: str) -> str | None:
        """`ack` for `<base>/cmd/ack`; None for a topic that is not one of our commands."""
        head = f"{self.base}/cmd/"
        if not topic.startswith(head):
            return None
        verb = topic[len(head) :]
        return verb if verb and "/" not in verb else None
