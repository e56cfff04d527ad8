"""Zeebe's gRPC gateway API (``gateway_protocol.Gateway``, port 26500).

``gateway_pb2*.py`` are generated from ``protos/gateway.proto`` by ``scripts/gen-proto``; do not
edit them. ``servicer.py`` serves them over the broker client.
"""
