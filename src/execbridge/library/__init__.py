"""Library mode: the gateway in-process, reached by the official SDKs through an ``http_client``."""
