"""The catalog as the app's pricing page needs it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from tollgate.api.deps import container, read_scope
from tollgate.api.schemas import catalog_json
from tollgate.bootstrap import Container

router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(read_scope)])


@router.get("/catalog")
def get_catalog(app: Container = Depends(container)) -> dict[str, Any]:
    """Plans, their prices per interval and currency, and their features."""
    return catalog_json(app.catalog)
