"""AWS Bedrock Runtime and STS as the mock backend speaks them (``modelyard mock --api bedrock``); see ``app``."""
