"""channel-bridge: connects agents to chat apps (Telegram, Discord, webhooks), exactly once."""
