"""HTTP endpoints of the analytics service: thin, the rules live in service.py. Every active
user may read them (the suite is one workspace, as for tasks)."""

import uuid
from typing import Annotated, Literal

from fastapi import Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from analytics.export import XLSX_MEDIA_TYPE, csv_stream, xlsx_stream
from analytics.repository import AnalyticsRepository, Filters
from analytics.schemas import (
    BurnupDay,
    CycleTime,
    IsoDay,
    Overview,
    TrendDay,
    UserPerformance,
)
from analytics.service import AnalyticsService
from taskhub_common.db import get_session
from taskhub_common.errors import invalid_field
from taskhub_common.routing import service_router
from taskhub_common.users import KnownCaller

router = service_router(prefix="/api/analytics", tags=["analytics"])
JSON = "application/json"


def filters(
    assigned_to: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
    created_from: Annotated[IsoDay | None, Query(alias="from")] = None,
    created_to: Annotated[IsoDay | None, Query(alias="to")] = None,
) -> Filters:
    """Filters of every endpoint; `from`/`to` are creation days (UTC, both included)."""
    if created_from and created_to and created_from > created_to:
        raise invalid_field("from", "from must not be after to", location="query")
    return Filters(assigned_to, created_by, tag, created_from, created_to)


async def get_service(
    request: Request, _: KnownCaller, session=Depends(get_session)
) -> AnalyticsService:
    return AnalyticsService(AnalyticsRepository(session), request.app.state.cache)


Service = Annotated[AnalyticsService, Depends(get_service)]
TaskFilters = Annotated[Filters, Depends(filters)]
Days = Annotated[int, Query(ge=7, le=365)]


@router.get("/overview", response_model=Overview)
async def overview(service: Service, where: TaskFilters) -> Response:
    return Response(await service.overview_json(where), media_type=JSON)


@router.get("/performance", response_model=list[UserPerformance])
async def performance(service: Service, where: TaskFilters) -> Response:
    return Response(await service.performance_json(where), media_type=JSON)


@router.get("/trends", response_model=list[TrendDay])
async def trends(service: Service, where: TaskFilters, days: Days = 30) -> Response:
    return Response(await service.trends_json(where, days), media_type=JSON)


@router.get("/burnup", response_model=list[BurnupDay])
async def burnup(service: Service, where: TaskFilters, days: Days = 30) -> Response:
    return Response(await service.burnup_json(where, days), media_type=JSON)


@router.get("/cycle-time", response_model=CycleTime)
async def cycle_time(service: Service, where: TaskFilters) -> Response:
    return Response(await service.cycle_time_json(where), media_type=JSON)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {XLSX_MEDIA_TYPE: {}, "text/csv": {}}}},
)
async def export(
    request: Request,
    _: KnownCaller,
    where: TaskFilters,
    format: Literal["xlsx", "csv"] = "xlsx",
) -> StreamingResponse:
    database = request.app.state.database
    if format == "csv":
        return StreamingResponse(
            csv_stream(database, where),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="tasks.csv"'},
        )
    return StreamingResponse(
        xlsx_stream(database, where),
        media_type=XLSX_MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="tasks.xlsx"'},
    )
