"""The client dialects and upstream wire formats the gateway speaks, by route and by API.

Adding one is a new module that calls ``registry.register``, its import below, and
its tests; the pipeline and the faces read the tables and change for nobody.
"""

from tollgate_orchestrator.dialects import chat
from tollgate_orchestrator.dialects.base import Dialect, StreamParser, Wire
from tollgate_orchestrator.dialects.registry import DIALECTS, WIRES, register

__all__ = ["DIALECTS", "WIRES", "Dialect", "StreamParser", "Wire", "chat", "register"]
