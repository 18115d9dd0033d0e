"""The catalog's rows as its models: one function per shape that the queries in queries.sql and
search.sql return."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.catalog.models import (
    AgentListing,
    CatalogItem,
    DeveloperListing,
    PackageOut,
    ReviewOut,
    VersionDetail,
    VersionOut,
)
from shared.kernel.db.database import Row


def listing_of(row: Row) -> AgentListing:
    """A listing row (queries ``listing``)."""
    return AgentListing.model_validate(row)


def developer_listing_of(row: Row) -> DeveloperListing:
    """A listing row with its pending versions (query ``developer_listings``)."""
    return DeveloperListing.model_validate(row)


def catalog_item_of(row: Row) -> CatalogItem:
    """A listing row with its relevance score (query ``search``)."""
    return CatalogItem.model_validate(row)


def version_of(row: Row) -> VersionOut:
    """A version row without its manifest (the manifest column, if any, is left out)."""
    return VersionOut.model_validate({k: v for k, v in row.items() if k != "manifest"})


def package_of(row: Row) -> PackageOut | None:
    """The ``package_sha256``, ``package_size`` and ``package_kind`` columns of a row as its package."""
    if row.get("package_sha256") is None:
        return None
    return PackageOut(sha256=row["package_sha256"], size=row["package_size"], kind=row["package_kind"])


def version_detail_of(row: Row) -> VersionDetail:
    """A version row with its manifest and package (query ``version_detail``)."""
    fields = {k: v for k, v in row.items() if not k.startswith("package_")}
    return VersionDetail.model_validate({**fields, "package": package_of(row)})


def review_of(row: Row, org_name: str) -> ReviewOut:
    """A review row (queries ``upsert_review``, ``reviews``) and the name of the reviewing org."""
    return ReviewOut.model_validate({**row, "org_name": org_name})


def cursor_value(value: Any) -> Any:
    """A sort-key value as a cursor carries it (JSON: ISO 8601 text, decimal text)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
