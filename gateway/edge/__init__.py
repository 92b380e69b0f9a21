"""The edge of the listeners: TLS, and the client's real address behind proxies.

- ``tls``             the server TLS context from ``tls_cert_file``/``tls_key_file``, reloaded on SIGHUP
- ``proxies``         trusted proxies, and the client they name in ``X-Forwarded-For`` or
                      ``Forwarded`` (pure)
- ``proxy_protocol``  the PROXY protocol header (v1 text, v2 binary) a TCP proxy sends first (pure)
- ``keys``            the key per-address limits count by (an IPv6 address by its prefix) (pure)
- ``front``           what a listener does before the HTTP request (PROXY header, TLS handshake),
                      and the one place the client address of a connection comes from
"""
