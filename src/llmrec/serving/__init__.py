"""The HTTP service of ``llmrec serve``.

Modules: ``app`` (``create_app``, ``ServeLimits``, ``ServeAccess``, the routes), ``batcher`` (``MicroBatcher``,
``ServeStats``), ``events`` (``EventLog``, the feedback log), ``schemas`` (strict request bodies, safe JSON reading),
``middleware`` (Host allow-list, body limit, timing), ``access`` (feedback token, rate limit), ``errors`` (the uniform
error body). Import from the modules; this package imports nothing, so importing it stays cheap.
"""
