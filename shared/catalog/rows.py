"""How listing rows are read and shown: the columns a query selects and the API's shape of a row."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.kernel.db.database import Row

_RAW_COLUMNS = ("id", "name", "publisher_org_id", "publisher_name", "display_name", "description", "category",
                "tags", "pricing_model", "pricing", "deployment_types", "install_count", "rating_avg", "rating_count",
                "status", "status_reason", "latest_version", "created_at", "updated_at", "published_at")


def listing_columns(alias: str) -> str:
    """The listing columns of ``alias``, arrays and timestamps rendered by PostgreSQL as JSON/ISO 8601.

    pg8000 parses arrays in Python, which costs more than the whole query on a catalog page;
    JSON and ISO strings are parsed in C (json, pydantic).
    """
    def render(column: str) -> str:
        if column in ("tags", "deployment_types"):
            return f"to_json({alias}.{column}) AS {column}"
        if column.endswith("_at"):
            return f"to_json({alias}.{column}) #>> '{{}}' AS {column}"
        return f"{alias}.{column}"
    return ", ".join(render(column) for column in _RAW_COLUMNS)


LISTING_COLUMNS = listing_columns("a")
VERSION_COLUMNS = ("agent_id, version, status, permission_diff, created_at, reviewed_at, review_reason")


def listing_out(row: Row) -> dict[str, Any]:
    """A listing row as the API shows it."""
    out = {k: v for k, v in row.items() if k not in ("search_doc", "created_by")}
    out["rating_avg"] = float(row["rating_avg"])
    return out


def cursor_value(value: Any) -> Any:
    """A sort-key value as a cursor carries it (JSON: ISO 8601 text, decimal text)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
