"""The mock backends shipped with the gateway: OpenAI-compatible, Anthropic, Azure OpenAI and AWS
Bedrock wire formats, and an OIDC issuer.

``cli`` (the ``modelyard mock`` flags and the Granian server) and ``config`` (the settings the
workers read) are shared, and so are ``wire`` (JSON, errors, headers, SSE events, stream pacing),
``abort`` (cutting a connection mid-answer) and ``jwt`` (RS256 tokens and JWK sets). One package or
module per provider: ``openai`` (wire, answers, app), ``anthropic`` (validate, answers, app),
``azure`` (routing and keys over the OpenAI app), ``bedrock`` (SigV4, keys, STS, event-stream,
Converse and InvokeModel, app) and ``oidc`` (the issuer).
"""
