"""API keys through the API: a write key can mint keys (e.g. a read key for a frontend)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from tollgate.api.deps import container, write_scope
from tollgate.api.schemas import RequestBody
from tollgate.bootstrap import Container
from tollgate.services.api_keys import create_api_key

router = APIRouter(prefix="/v1", tags=["api keys"], dependencies=[Depends(write_scope)])


class ApiKeyCreate(RequestBody):
    name: str = Field(min_length=1, max_length=100)
    scope: Literal["read", "write"]


class ApiKeyCreated(BaseModel):
    id: str
    name: str
    scope: str
    secret: str = Field(description="Shown once; Tollgate keeps only its hash.")


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated)
def post_api_key(body: ApiKeyCreate, app: Container = Depends(container)) -> ApiKeyCreated:
    """Create an API key; the secret is in this answer only."""
    created = create_api_key(db=app.db, clock=app.clock, name=body.name, scope=body.scope)
    return ApiKeyCreated(
        id=created.id, name=created.name, scope=created.scope, secret=created.secret
    )
