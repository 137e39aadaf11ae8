"""Running jobs in the background: pid locks, status files, logs, start/stop."""
