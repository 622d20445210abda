"""browser-worker: headless Chromium pages for agents and the gateway, behind the SSRF guard."""
