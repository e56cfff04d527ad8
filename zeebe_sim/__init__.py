"""zeebe-sim: a simulated multi-broker Zeebe cluster whose backups behave like the real thing."""

# Reported as the broker version in topology and backup descriptors.
VERSION = "8.8.0-zeebe-sim"
