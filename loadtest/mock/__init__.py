"""The mock backends shipped with the gateway: OpenAI-compatible, Anthropic and Azure OpenAI wire formats."""
