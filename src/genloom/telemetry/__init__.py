"""What Genloom tells about itself: the observer interface the request path and workers call."""

from genloom.telemetry.observer import NO_OBSERVER, Observer, RecordingObserver

__all__ = ["NO_OBSERVER", "Observer", "RecordingObserver"]
