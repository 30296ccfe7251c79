"""``ctrlalign serve``: a run behind an OpenAI-compatible HTTP API (FastAPI on uvicorn), with
the preference and the alignment dial chosen per request.

The surface is what users of vLLM's OpenAI server expect, so their clients work unchanged:
``/v1/chat/completions`` and ``/v1/completions`` (both streaming as server-sent events in
OpenAI's chunk format), ``/v1/models``, ``/health``, ``/metrics`` (Prometheus), errors in
OpenAI's body (``{"error": {"message", "type", "param", "code"}}``), ``--api-key``. What
only ctrlalign has rides on four extra body fields (``extra_body`` in the ``openai``
client): ``preference`` (the control), ``alpha`` (the dial: a CLM run's strength, or with
``against`` the mix of two MEET controls), ``against`` and ``compose``; the preference may
also be chosen as the model, ``"model": "RUN:concise"``, as vLLM and LoRAX users pick
adapters, or be a blend of several with weights (``{"concise": 1, "warm": 0.5}``).

The parts, as vLLM keeps them apart:

- ``protocol``: the request bodies (closed pydantic models) and ``RequestError``;
- ``service``: one run's model cards, and a request validated into engine jobs through
  ``dial.dial_row``, the path the CLI uses; the jobs go to a ``jobs.ServingEngine``;
- ``responses``: engine events shaped into OpenAI's bodies and server-sent events;
- ``middleware``: the API key, the body limit, request counting, OpenAI's error bodies;
- ``metrics``: the Prometheus series; ``app``: the FastAPI app; ``server``: uvicorn;
  ``config``: the settings (``ServeConfig``), one ``ctrlalign serve`` flag per field.
"""
