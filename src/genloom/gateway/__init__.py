"""Between the API and the queue: validation, admission and the record of every request."""

from genloom.gateway.errors import GenerationFailed, InvalidRequest, ModelNotFound, NotReady
from genloom.gateway.readiness import Readiness, ServerState
from genloom.gateway.text_service import Choice, Completion, TextRequest, TextService, Usage

__all__ = [
    "Choice",
    "Completion",
    "GenerationFailed",
    "InvalidRequest",
    "ModelNotFound",
    "NotReady",
    "Readiness",
    "ServerState",
    "TextRequest",
    "TextService",
    "Usage",
]
