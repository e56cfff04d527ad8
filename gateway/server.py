"""The gateway process: a broker client, the two HTTP apps (management and REST) and the gRPC
API."""

from __future__ import annotations

from typing import Any

import attrs
from aiohttp import web

from gateway.actuator import management_app
from gateway.client import BrokerClient
from gateway.recovery import coordinator_of
from gateway.rest import rest_app
from zeebe_sim.ground.transport import TCP, NetworkBackend


@attrs.frozen
class GatewayConfig:
    contact_points: tuple[str, ...]
    host: str = "127.0.0.1"
    management_port: int = 9600
    rest_port: int = 8080
    grpc_port: int = 26500
    request_timeout_s: float = 15.0
    backup_fanout_jitter_s: float = 0.0


class Gateway:
    def __init__(self, config: GatewayConfig, network: NetworkBackend = TCP) -> None:
        """``network``: where the brokers are (the in-process cluster's memory network)."""
        self.config = config
        self.client = BrokerClient(list(config.contact_points), config.request_timeout_s, network)
        self._runners: list[web.AppRunner] = []
        self.management_port = 0
        self.rest_port = 0
        self.grpc_port = 0
        self._grpc_server: Any = None  # grpc.aio.Server, imported only when serving

    async def start(self) -> None:
        await self.client.start()
        self.management_port = await self._serve(
            management_app(self.client, self.config.backup_fanout_jitter_s),
            self.config.management_port,
        )
        self.rest_port = await self._serve(rest_app(self.client), self.config.rest_port)
        from gateway.grpc.servicer import start_grpc_server

        self._grpc_server, self.grpc_port = await start_grpc_server(
            self.client, self.config.host, self.config.grpc_port
        )

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, port)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._grpc_server is not None:
            # Streams and long polls in flight end with UNAVAILABLE after the grace period.
            await self._grpc_server.stop(grace=1.0)
        for runner in self._runners:
            await runner.cleanup()
        await coordinator_of(self.client).close()  # a restore in flight ends with the gateway
        await self.client.stop()
