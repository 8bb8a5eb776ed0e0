"""flowledger: a durable ledger of background work, and Task Flow on top of it."""
