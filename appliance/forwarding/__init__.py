"""What both gateways share on their data path: the forwarding policy and the proxy plumbing.

- :mod:`.headers`: which request and response headers cross a gateway (docs/inway.md,
  docs/outway.md, "What crosses the gateway");
- :mod:`.paths`: the request path check (no escape from a service's base path);
- :mod:`.proxy`: the connection pool to the next hop and the streamed request and answer;
- :mod:`.asgi`: the Falcon request and response side of a proxied request.

The inway and the outway import from here; nothing here imports from either gateway.
"""
