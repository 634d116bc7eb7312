"""The client dialects and upstream wire formats the gateway speaks, by route and by API.

Adding one is a new module that calls ``registry.register``, its import below, and
its tests; the pipeline and the faces read the tables and change for nobody.
"""

from tollgate_orchestrator.dialects import chat, embeddings, messages, responses
from tollgate_orchestrator.dialects.base import (
    Dialect,
    Session,
    StreamParser,
    StreamTranslator,
    Translation,
    Wire,
)
from tollgate_orchestrator.dialects.registry import DIALECTS, TRANSLATIONS, WIRES, register

__all__ = [
    "DIALECTS",
    "TRANSLATIONS",
    "WIRES",
    "Dialect",
    "Session",
    "StreamParser",
    "StreamTranslator",
    "Translation",
    "Wire",
    "chat",
    "embeddings",
    "messages",
    "register",
    "responses",
]
