"""The admin HTTP listener (h11 on trio), loopback by default.

- ``server``      ``AdminServer``: routes and endpoints (health, readiness, metrics, publish, token)
- ``http``        HTTP/1.1 plumbing: requests within limits, responses
- ``slots``       the cap on open connections, in which idle ones give way to new ones
- ``requests``    the publish and token request bodies, parsed (pure)
- ``playground``  the playground page: files, Content-Security-Policy, its info endpoint's facts
"""
