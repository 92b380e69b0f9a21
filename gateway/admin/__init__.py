"""The admin HTTP listener (h11 on trio), loopback by default.

- ``server``      ``AdminServer``: routes and endpoints (health, readiness, metrics, publish, token)
- ``http``        HTTP/1.1 plumbing: requests within limits, responses
- ``requests``    the publish and token request bodies, parsed (pure)
- ``playground``  the playground page: files, Content-Security-Policy, its info endpoint's facts
"""
