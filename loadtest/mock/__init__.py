"""The mock backends shipped with the gateway: OpenAI-compatible, Anthropic, Azure OpenAI, Vertex AI
and AWS Bedrock wire formats, and an OIDC issuer.

``cli`` (the ``modelyard mock`` flags and the Granian server) and ``config`` (the settings the
workers read) are shared, and so are ``wire`` (JSON, errors, headers, SSE events, forms, base64url,
stream pacing) and ``abort`` (cutting a connection mid-answer). One package or module per provider:
``openai`` (wire, answers, app), ``anthropic`` (validate, answers, app), ``azure`` (routing and keys
over the OpenAI app), ``vertex`` (Google's token endpoints, Gemini checks and answers, Anthropic on
Vertex), ``bedrock`` (SigV4, keys, STS, event-stream, Converse and InvokeModel, app) and ``oidc``
(the issuer). The identity endpoints share ``jwt`` (RS256 signing and verification, claim checks,
JWK sets and fetching them) and ``tokens`` (the access tokens the mocks issue and the run's key
that signs them); ``entra`` is the Microsoft identity platform's token endpoint that ``azure`` serves.
"""
