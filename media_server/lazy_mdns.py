"""aioice's mDNS module (and dnspython behind it) loaded only when an mDNS name is resolved.

Why (issue 17, idle memory): `aioice.ice` imports `aioice.mdns` at start, which imports ~60
modules of dnspython (zones, TSIG, rdata types) and through them `email` and
`importlib.metadata`: ~3.5 MiB of the idle node's RSS. A node needs them only when a browser
offers an mDNS candidate (`<uuid>.local`, which hides its private address) and aioice has to
resolve it. `install()` puts a stand-in module at `aioice.mdns` before aioice is imported: it
answers `is_mdns_hostname` (called for every remote candidate) itself, with aioice's own
pattern, and loads the real module from aioice's package on the first use of anything else
(`create_mdns_protocol`, `MDnsProtocol`, ...), forwarding to it from then on. If aioice is
already imported, or its layout changed, nothing is done (the real module stays).
`tests/medstream/test_lean_node.py` checks that an idle node does not load dnspython and
`tests/media_server/test_ice.py` that the stand-in behaves as the real module.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

NAME = "aioice.mdns"
# aioice 0.10-0.13's MDNS_HOSTNAME_RE
MDNS_HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9-]{1,63}\.local$")


class _NotLoaded:
    """What `aioice.mdns.MDnsProtocol` is before the real module is loaded (never instantiated)."""


class _LazyMdns(types.ModuleType):
    """Stands in for aioice.mdns until something other than `is_mdns_hostname` is used."""

    def __init__(self, path: Path) -> None:
        super().__init__(NAME)
        self.__file__ = str(path)
        self._medstream_path = path
        self._medstream_real: types.ModuleType | None = None

    @staticmethod
    def is_mdns_hostname(name: str) -> bool:
        return MDNS_HOSTNAME_RE.match(name) is not None

    @property
    def MDnsProtocol(self) -> Any:  # aioice's name
        # aioice.ice reads it at import, in an annotation (and in a `cast`): a placeholder
        # until the real module is loaded, the real class after
        real = self._medstream_real
        return _NotLoaded if real is None else real.MDnsProtocol

    def __getattr__(self, name: str) -> Any:  # only for attributes not defined here
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def load(self) -> types.ModuleType:
        """Import the real aioice.mdns (once) and return it."""
        real = self._medstream_real
        if real is None:
            spec = importlib.util.spec_from_file_location(NAME, self._medstream_path)
            assert spec is not None and spec.loader is not None
            real = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(real)
            self._medstream_real = real
        return real


def install() -> bool:
    """Put the stand-in in place if aioice is not imported yet; True if it is (now) in place."""
    current = sys.modules.get(NAME)
    if isinstance(current, _LazyMdns):
        return True
    if current is not None or "aioice" in sys.modules:
        return False
    spec = importlib.util.find_spec("aioice")  # a top-level name: found, not imported
    if spec is None or not spec.submodule_search_locations:
        return False
    path = Path(next(iter(spec.submodule_search_locations))) / "mdns.py"
    if not path.is_file():
        return False
    sys.modules[NAME] = _LazyMdns(path)
    return True
