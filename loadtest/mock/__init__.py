"""The mock backends shipped with the gateway: OpenAI-compatible, Anthropic and Azure OpenAI wire formats.

``cli`` (the ``modelyard mock`` flags and the Granian server) and ``config`` (the settings the
workers read) are shared, and so are ``wire`` (JSON, errors, headers, SSE events) and ``abort``
(cutting a connection mid-answer). One package per provider: ``openai`` (wire, answers, app),
``anthropic`` (validate, answers, app) and ``azure`` (routing and keys over the OpenAI app).
"""
