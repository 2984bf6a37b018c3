"""The accounting of a sink that sends records to a server that may be away (MQTT, OPC UA): what
was handed over, confirmed, dropped at the queue bound or still queued at the end, and the
sessions made and lost. One definition, so every such sink reports its losses alike."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeliveryStats:
    """published: records handed to the sink's bounded queue; acknowledged: confirmed by the
    server; dropped: lost at the queue bound while the server was slow or away; unsent: still
    queued at close; connects / disconnects: server sessions made / lost; refused: why the
    server refused us (then it is not retried)."""

    published: int = 0
    acknowledged: int = 0
    dropped: int = 0
    unsent: int = 0
    connects: int = 0
    disconnects: int = 0
    refused: str = ""

    @property
    def pending(self) -> int:
        """Records handed over and neither confirmed nor dropped yet."""
        return self.published - self.dropped - self.acknowledged

    @property
    def lost(self) -> int:
        return self.dropped + self.unsent

    def loss_line(self, what: str, queue_option: str, queue_limit: int) -> str:
        """"3 MQTT record(s) dropped beyond --mqtt-queue 2, 0 unsent at exit"."""
        return f"{self.dropped} {what} dropped beyond {queue_option} {queue_limit}, {self.unsent} unsent at exit"

    def never_reached(self, server: str, what: str) -> str:
        """The line for a server no session was ever made with."""
        why = f"it refused the connection: {self.refused}" if self.refused else "no connection"
        return f"{server} never reached ({why}): {self.published} {what} not delivered"
