"""The one place incidents are raised: on the execution that waits for a reply that will
not come (the work failed for good, the message cannot be delivered, nobody will send it).

An incident of type :data:`INCIDENT_TYPE` (``camundaRelay``) is what a person sees in
Cockpit instead of a silent forever-wait. Its ``configuration`` names what it is about (the
job id, or ``orphan:<message>``), so that a retry after a lost answer finds the incident it
created instead of raising a second one.
"""

from __future__ import annotations

import logging

from camunda_relay.client import EngineClient
from camunda_relay.errors import BadRequest, NotFound

__all__ = ["INCIDENT_TYPE", "MAX_MESSAGE", "Incidents"]

log = logging.getLogger(__name__)

INCIDENT_TYPE = "camundaRelay"
MAX_MESSAGE = 3900  # the engine's column holds 4,000 characters


class Incidents:
    """Raises ``camundaRelay`` incidents; every method raises
    :class:`~camunda_relay.errors.EngineError` when the engine cannot be asked right now."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client

    async def exists(self, process_instance_id: str, configuration: str) -> bool:
        """Whether the instance already carries our incident about ``configuration``."""
        found = await self._client.incidents(
            process_instance_id=process_instance_id, incident_type=INCIDENT_TYPE
        )
        return any(incident.get("configuration") == configuration for incident in found)

    async def on_execution(self, execution_id: str, message: str, configuration: str) -> None:
        """Raise the incident on one execution."""
        await self._client.create_incident(
            execution_id,
            incident_type=INCIDENT_TYPE,
            message=message[:MAX_MESSAGE],
            configuration=configuration,
        )

    async def for_reply(
        self, *, process_instance_id: str, message_name: str, reason: str, configuration: str
    ) -> bool:
        """Raise the incident for a reply job: on the execution waiting for ``message_name``,
        else on the instance's newest execution that takes one. True once the incident is in
        the engine (created now, or found from an earlier try); False when no execution is
        left to carry it (the instance ended or was cancelled)."""
        if await self.exists(process_instance_id, configuration):
            return True
        for execution_id in await self._candidates(process_instance_id, message_name):
            try:
                await self.on_execution(execution_id, reason, configuration)
            except BadRequest:
                continue  # e.g. a scope execution without an activity: try the next one
            except NotFound:
                continue  # gone meanwhile
            return True
        return False

    async def _candidates(self, process_instance_id: str, message_name: str) -> list[str]:
        """Executions to carry the incident: the one waiting for the message, else those of
        the instance, newest first (the process instance itself has no activity once it has
        child executions, and the engine refuses an incident there)."""
        try:
            waiting = await self._client.executions(
                process_instance_id=process_instance_id, message_name=message_name
            )
            if waiting:
                return [str(execution["id"]) for execution in waiting]
            executions = await self._client.executions(process_instance_id=process_instance_id)
        except NotFound:
            return []
        return [str(execution["id"]) for execution in reversed(executions)]
