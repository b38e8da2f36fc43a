"""Online cascade serving: retrieval then ranking, in process or through TF Serving.

Modules: ``app`` (the HTTP service), ``backends`` (where the stages run), ``registry`` (the pair
in service and its hot swap), ``manifest`` (the push manifest and TF Serving's model config),
``metrics``, ``client`` and ``cli`` (``lcron serve``). See docs/serving.md.
"""
