"""An OpenAI-compatible upstream with deterministic answers, realistic usage and
fault injection, for local runs, tests and benchmarks (``python -m tollgate_simulator``).

Settings (env prefix ``TOLLGATE_SIM_``): ``PORT`` (8090), ``HOST``, ``LATENCY_SCALE``
(1; 0 = instant), ``LATENCY_FILE`` (YAML ``model|"*": {fixed_ms, per_token_ms}``),
``MODELS`` (comma list or JSON list; when set, other models get 404 model_not_found).

API:
- ``POST /v1/chat/completions``: plain or ``stream: true`` (SSE, ``[DONE]``,
  ``stream_options.include_usage``). The text and usage are a pure function of the
  request; ``max_tokens``/``max_completion_tokens`` cut it (finish_reason "length");
  o-series and gpt-5 models report reasoning tokens; a long system prefix reports
  cached tokens; ``tools`` plus a prompt asking to call one give ``tool_calls``.
  ``n`` > 1 is not simulated.
- ``GET /v1/models``: the default policy's catalog plus models seen (or ``MODELS``).
- ``POST /_sim/faults``: one object or a list, queued FIFO; each consumed by the next
  ``count`` calls to ``model`` ("*" = any)::

      {"model": "gpt-4o", "status": 429, "count": 2, "retry_after": 1}
      {"model": "*", "status": 503, "delay_ms": 200}
      {"model": "gpt-4o", "status": 200, "delay_ms": 5000}   # slow success
      {"model": "gpt-4o", "mid_stream_error": true, "after_chunks": 1}
      optional: "code", "message", "type" override the error body

  ``delay_ms`` is not scaled by ``LATENCY_SCALE``. A mid-stream fault sends
  ``after_chunks`` chunks then drops the connection (a plain request gets half its
  body). ``GET`` lists pending faults, ``DELETE`` clears them.
- ``GET /_sim/stats``: ``{"calls": {model: n}, "total", "faults_injected",
  "stream_disconnects", "pending_faults"}``; every well-formed chat call counts,
  failed or not. ``POST /_sim/reset`` zeroes stats and clears faults.
"""
