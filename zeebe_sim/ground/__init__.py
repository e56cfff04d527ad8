"""The ground floor: what every other package stands on, importing nothing else of ours.

Errors, typed ids, the wire vocabulary and its transport, records and value types, routing (key
and correlation-key partitioning, replica placement), background-task ownership, logging and the
data-directory layout. See ARCHITECTURE.md for the floors above.
"""

# Reported as the broker version in topology and backup descriptors.
VERSION = "8.8.0-zeebe-sim"
