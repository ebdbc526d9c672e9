"""Recovery Procedures: verify, point-in-time recovery, backup restoration, switchover rollback."""
