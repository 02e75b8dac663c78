"""The embedded mode's pass-through: a request for a service goes from the server straight to
that service's app in this process, past the gateway's own middleware stack (decision 0092).

The gateway's decisions are the same as PassThroughRoute's, made by the same functions: the
caller from the token, the owning service, the rate limit. What is left out is what the
service's own stack does again in the same process: the request id and trace context, the
access log line, the limits on the request, the error pages. Kept: CORS and the gateway's
request metrics, and for the composed task view, which the gateway answers itself, its request
context. A refusal, the gateway's own routes and WebSockets take the whole gateway app, as they
would without this.
"""

from fastapi import FastAPI, Request
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import PassThroughRoute, is_composed, owner
from gateway.compose import compose_task
from gateway.cors import Cors, cors_options
from gateway.proxy import DROPPED_IN_PROCESS, forwarded_headers
from gateway.upstream_client import InProcessUpstream
from taskhub_common.errors import AppError
from taskhub_common.metrics import MetricsMiddleware
from taskhub_common.middleware import RequestContextMiddleware

# Where the admitted request's service and path wait, in the scope.
ADMITTED = "taskhub.in_process"


class InProcessPassThrough:
    def __init__(self, gateway: FastAPI) -> None:
        self.gateway = gateway
        self.route: PassThroughRoute = gateway.state.pass_through
        settings = gateway.state.settings

        def outer(app: ASGIApp) -> ASGIApp:
            return Cors(
                MetricsMiddleware(app, metrics=gateway.state.metrics), **cors_options(settings)
            )

        self.forwarding = outer(self.forward)
        # The gateway answers the composed view itself: under its own request context.
        self.composing = outer(RequestContextMiddleware(self.compose, settings.SERVICE_NAME))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = await self.admit(scope, receive) if scope["type"] == "http" else self.gateway
        await app(scope, receive, send)

    async def admit(self, scope: Scope, receive: Receive) -> ASGIApp:
        """Where the request goes: straight to its service, to the composed view, or else to
        the gateway app, which decides a refusal again and answers it. The rate limit is
        counted here only for a request that stays here."""
        match, child_scope = self.route.matches(scope)
        if match is not Match.FULL:
            return self.gateway
        scope.update(child_scope, app=self.gateway)
        request = Request(scope, receive)
        await self.route.identify(request)
        try:
            upstream, path = owner(request)
        except AppError:
            return self.gateway
        client = request.app.state.upstream_clients[upstream.name]
        # Traced calls (a client span each) are the gateway app's.
        if not isinstance(client, InProcessUpstream):
            return self.gateway
        try:
            await self.route.count(request)
        except AppError:
            return self.gateway
        scope[ADMITTED] = (client, path, request)
        return self.composing if is_composed(request.method, path) else self.forwarding

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        client, path, request = scope.pop(ADMITTED)
        headers = forwarded_headers(request, DROPPED_IN_PROCESS)
        await client.serve(scope["method"], path, scope["query_string"], headers, receive, send)

    async def compose(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, path, request = scope.pop(ADMITTED)
        response = await compose_task(request, path)
        await response(scope, receive, send)
