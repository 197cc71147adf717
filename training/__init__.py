"""Training and run orchestration: LightningModules, callbacks, checkpoint loading, building and running jobs."""
