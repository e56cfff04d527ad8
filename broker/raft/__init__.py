"""Raft for replicated partitions: a sans-IO core (``core.py``) and its vocabulary
(``messages.py``). See ``broker.raft.core`` for the theory of operation."""
