"""An OpenAI- and Anthropic-compatible upstream with deterministic answers, realistic
usage and fault injection, for local runs, tests and benchmarks
(``python -m tollgate_simulator``).

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
- ``POST /v1/responses``: OpenAI Responses, plain or streamed (named SSE events from
  ``response.created`` to ``response.completed``/``incomplete``, no ``[DONE]``).
  Stateless: ``previous_response_id`` is ignored, ``background``/``conversation`` are
  refused; hosted tools are accepted and never called. Reasoning models answer with a
  ``reasoning`` item (``encrypted_content`` with ``include``). See ``responses``.
- ``POST /v1/embeddings``: deterministic unit vectors, float or base64, ``dimensions``.
- ``POST /v1/messages`` (and ``/count_tokens``): Anthropic Messages, plain or streamed,
  ``x-api-key`` or Bearer auth, ``anthropic-version`` required, Anthropic's error shape,
  ``cache_control`` prompt caching (read and write tokens). See ``messages``.
  The same conversation gets the same text and tool calls through every API, and the
  same usage unless tools are declared (counted as each API spells them): see
  ``generate``. So a translating gateway can be compared with a native upstream.
- ``GET /v1/models``: the default policy's catalog plus models seen (or ``MODELS``).
- ``POST /_sim/faults``: one object or a list, queued FIFO; each consumed by the next
  ``count`` calls to ``model`` ("*" = any)::

      {"model": "gpt-4o", "status": 429, "count": 2, "retry_after": 1}
      {"model": "*", "status": 503, "delay_ms": 200}
      {"model": "gpt-4o", "status": 200, "delay_ms": 5000}   # slow success
      {"model": "gpt-4o", "mid_stream_error": true, "after_chunks": 1}
      optional: "code", "message", "type" override the error body

  Faults apply to every API; an error answers in the API's own shape (Anthropic's on
  /v1/messages). ``delay_ms`` is not scaled by ``LATENCY_SCALE``. A mid-stream fault
  sends the stream's opening events and ``after_chunks`` content events, then drops
  the connection before the stream's end (a plain request gets half its body).
  ``GET`` lists pending faults, ``DELETE`` clears them.
- ``GET /_sim/stats``: ``{"calls": {model: n}, "apis": {api: n}, "total",
  "faults_injected", "stream_disconnects", "pending_faults"}`` (api: chat, responses,
  embeddings, messages, count_tokens); every well-formed call counts, failed or not.
  ``GET /_sim/requests``: the last 64 such calls ``{api, path, model, stream, headers,
  body}``, credentials left out. ``POST /_sim/reset`` zeroes stats and the journal and
  clears faults.
"""
