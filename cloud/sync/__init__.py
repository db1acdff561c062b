"""Cloud side of sync: the per-site change feed down, passage events and gate status up, snapshots."""
