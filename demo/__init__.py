"""What `starfish demo` runs: the whole resort with a live table, or one gate with a scripted queue."""
