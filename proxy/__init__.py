"""The aiohttp reverse proxy: routing, balancing, canary split, health."""
