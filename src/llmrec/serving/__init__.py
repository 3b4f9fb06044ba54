"""The HTTP service of ``llmrec serve``.

Modules: ``app`` (``create_app``, ``ServeLimits``, ``ServeAccess``, the routes), ``batcher`` (``MicroBatcher``,
``ServeStats``), ``events`` (``EventLog``, the feedback log), ``live`` (``LiveCatalog``: items added and retired while
serving), ``admin`` (``POST /items``, ``DELETE /items/{raw_id}``), ``overlay`` (``CatalogOverlay``: those changes on
disk), ``schemas`` (strict request bodies, safe JSON reading), ``middleware`` (Host allow-list, body limit, timing),
``access`` (feedback and admin tokens, rate limit), ``errors`` (the uniform error body). Import from the modules;
this package imports nothing, so importing it stays cheap.
"""
