"""Chat-app adapters: each turns a platform's updates into `Inbound` messages, sends replies."""
