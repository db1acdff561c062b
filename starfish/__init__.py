"""The `starfish` command: the one composition root of the gate, cloud, sync and demo tools."""
