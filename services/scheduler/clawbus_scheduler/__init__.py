"""clawbus scheduler: cron jobs and heartbeats, fired exactly once by one leader replica."""
