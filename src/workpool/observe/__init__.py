"""Exporters and figures on top of the pool's events.

``MetricsObserver`` (figures per task name) and ``progress`` need nothing beyond the standard
library. ``workpool.observe.prometheus`` needs ``workpool[prometheus]``,
``workpool.observe.otel`` needs ``workpool[otel]``; both are imported only when asked for.
"""

from .figures import Distribution, MetricsObserver, MetricsSnapshot, TaskFigures

__all__ = ["Distribution", "MetricsObserver", "MetricsSnapshot", "TaskFigures"]
