"""A local Alipay for tests and the local stack: the v3 token endpoint, with faults on demand,
the merchant consent page and notifications to the ISV's app gateway.

See ``server.Emulator`` for the interface; ``python -m sandbox.emulator`` runs one alone.
"""

from .authority import AuthorizationAuthority, BusinessError
from .faults import Fault
from .gateway import Gateway, Request
from .server import Emulator

__all__ = ["AuthorizationAuthority", "BusinessError", "Emulator", "Fault", "Gateway", "Request"]
