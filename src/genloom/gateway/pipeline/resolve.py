"""Stage 1, resolve: the model a request names becomes the version that serves it (alias,
tiered route, registry version, rollout arm). `run` checks only that the version serves here,
so a cache hit costs no tokenizing; `prepare` checks the request against it (chat template,
prompt tokens, limits), for what goes on to the queue."""

from __future__ import annotations

from genloom.gateway.pipeline.call import TextCall
from genloom.gateway.text_service import TextService
from genloom.telemetry import Observer


class Resolve:
    name = "resolve"

    def __init__(self, *, text: TextService, observer: Observer) -> None:
        self._text = text
        self._observer = observer

    def run(self, call: TextCall) -> None:
        """404 for an unknown model, 503 while it is not ready or not loaded."""
        call.request = self._text.route(call.request)
        self._text.check_model(call.request.model)
        r = call.request.resolution
        if r is not None and r.arm is not None:
            self._observer.rollout_arm(model=r.name, version=r.key, arm=r.arm.value)

    def prepare(self, call: TextCall) -> None:
        """400 for what the version cannot take."""
        call.prepared = self._text.prepare(call.request)
