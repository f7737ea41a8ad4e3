"""The SFU: forwards encoded media as is (see docs/architecture.md)."""

from . import lazy_mdns

lazy_mdns.install()  # before anything imports aioice: dnspython only when mDNS is used
