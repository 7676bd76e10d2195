"""The FSC Inway: a reverse proxy that lets other Peers of the Group call this Peer's Services.

Per request (``appliance.inway.app``): the peer's mutual-TLS identity (verified in the
handshake), the certificate-bound access token in ``Fsc-Authorization``
(``appliance.inway.tokens``), the ``Fsc-Transaction-Id``, a transaction log record written
before anything is forwarded (``appliance.inway.logging``), then the request is streamed to
the Service's backend and the answer streamed back (``appliance.inway.proxy``).
"""
