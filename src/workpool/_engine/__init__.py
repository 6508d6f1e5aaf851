"""The scheduler: events in, decisions out; no threads, processes or awaits inside."""

from .queue import ReadyQueue
from .scheduler import Scheduler
from .vocabulary import RETIRE, Directive, Next, Offer, Outcome, SlotState, WorkerSlot

__all__ = [
    "RETIRE",
    "Directive",
    "Next",
    "Offer",
    "Outcome",
    "ReadyQueue",
    "Scheduler",
    "SlotState",
    "WorkerSlot",
]
