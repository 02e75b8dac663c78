"""The embedded mode's pass-through: a request for a service goes from the server straight to
that service's app in this process, past the gateway's own middleware stack (decision 0092).

The gateway's decisions are the same as PassThroughRoute's, made by the same functions: the
caller from the token, the owning service, the rate limit. What is left out is what the
service's own stack does again in the same process: the request id and trace context, the
access log line, the limits on the request, the error pages. Kept: CORS and the gateway's
request metrics. Whatever the gateway itself answers (a refusal, the composed task view, its
own routes, WebSockets) takes the whole gateway app, as it would without this.
"""

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from gateway.app import PassThroughRoute, cors_options, is_composed, owner
from gateway.proxy import DROPPED_IN_PROCESS, forwarded_headers
from gateway.upstream_client import InProcessUpstream
from taskhub_common.errors import AppError
from taskhub_common.metrics import MetricsMiddleware

# Where the admitted request's service and path wait for the forwarding app, in the scope.
ADMITTED = "taskhub.in_process"


class InProcessPassThrough:
    def __init__(self, gateway: FastAPI) -> None:
        self.gateway = gateway
        self.route: PassThroughRoute = gateway.state.pass_through
        self.lane = CORSMiddleware(
            MetricsMiddleware(self.forward, metrics=gateway.state.metrics),
            **cors_options(gateway.state.settings),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await self.admit(scope, receive):
            await self.lane(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)

    async def admit(self, scope: Scope, receive: Receive) -> bool:
        """Whether the request goes straight to its service; the rate limit is counted when
        it does. A refusal is left to the gateway app, which decides it again and answers."""
        match, child_scope = self.route.matches(scope)
        if match is not Match.FULL:
            return False
        scope.update(child_scope, app=self.gateway)
        request = Request(scope, receive)
        await self.route.identify(request)
        try:
            upstream, path = owner(request)
        except AppError:
            return False
        client = request.app.state.upstream_clients[upstream.name]
        # Traced calls (a client span each) and the composed view are the gateway's own work.
        if not isinstance(client, InProcessUpstream) or is_composed(request.method, path):
            return False
        try:
            await self.route.count(request)
        except AppError:
            return False
        scope[ADMITTED] = (client, path, forwarded_headers(request, DROPPED_IN_PROCESS))
        return True

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        client, path, headers = scope.pop(ADMITTED)
        await client.serve(scope["method"], path, scope["query_string"], headers, receive, send)
