"""HTTP layer: the aiohttp app (OpenAI-compatible and native APIs, metrics) and `serve`."""
