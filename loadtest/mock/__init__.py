"""The mock backends shipped with the gateway: OpenAI-compatible, Anthropic, Azure OpenAI and Vertex AI wire formats.

``cli`` (the ``modelyard mock`` flags and the Granian server) and ``config`` (the settings the
workers read) are shared, and so are ``wire`` (JSON, errors, headers, SSE events, forms) and
``abort`` (cutting a connection mid-answer). One package per provider: ``openai`` (wire, answers,
app), ``anthropic`` (validate, answers, app), ``azure`` (routing and keys over the OpenAI app) and
``vertex`` (Google's token endpoints, Gemini checks and answers, Anthropic on Vertex). The identity
endpoints share ``jwt_verify`` (RS256 tokens, JWKS) and ``tokens`` (the access tokens the mocks
issue); ``entra`` is the Microsoft identity platform's token endpoint that ``azure`` serves.
"""
