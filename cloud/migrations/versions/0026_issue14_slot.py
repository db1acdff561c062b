"""Rentals (租赁): rental_items (counted stock or tagged assets, hour/day prices by day type, deposit, fees),
rental_assets (one tagged pair each), rental_orders (an order's desk state and deposit outcome), rental_lines
(units of an item for a period, due_at, out/returned/lost counts) and rental_movements (each hand-out and return)

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rental_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("size", sa.String(length=16), nullable=False),
        sa.Column("tracking", sa.String(length=8), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("hour_weekday_fen", sa.Integer(), nullable=False),
        sa.Column("hour_weekend_fen", sa.Integer(), nullable=False),
        sa.Column("hour_holiday_fen", sa.Integer(), nullable=False),
        sa.Column("day_weekday_fen", sa.Integer(), nullable=False),
        sa.Column("day_weekend_fen", sa.Integer(), nullable=False),
        sa.Column("day_holiday_fen", sa.Integer(), nullable=False),
        sa.Column("deposit_fen", sa.Integer(), nullable=False),
        sa.Column("damage_fee_fen", sa.Integer(), nullable=False),
        sa.Column("loss_fee_fen", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_rental_items_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rental_items")),
        sa.UniqueConstraint("site_id", "code", name=op.f("uq_rental_items_site_id_code")),
    )
    op.create_index(op.f("ix_rental_items_site_id"), "rental_items", ["site_id"], unique=False)
    op.create_table(
        "rental_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("period_unit", sa.String(length=4), nullable=False),
        sa.Column("periods", sa.Integer(), nullable=False),
        sa.Column("day_type", sa.String(length=8), nullable=False),
        sa.Column("start_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("due_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("unit_price_fen", sa.Integer(), nullable=False),
        sa.Column("hour_fen", sa.Integer(), nullable=False),
        sa.Column("price_fen", sa.Integer(), nullable=False),
        sa.Column("deposit_fen", sa.Integer(), nullable=False),
        sa.Column("out_qty", sa.Integer(), nullable=False),
        sa.Column("returned_qty", sa.Integer(), nullable=False),
        sa.Column("lost_qty", sa.Integer(), nullable=False),
        sa.Column("charges_fen", sa.Integer(), nullable=False),
        sa.Column("handed_out_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("returned_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["rental_items.id"], name=op.f("fk_rental_lines_item_id_rental_items")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_rental_lines_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rental_lines")),
    )
    op.create_index("ix_rental_lines_due_at", "rental_lines", ["due_at"], unique=False)
    op.create_index(op.f("ix_rental_lines_item_id"), "rental_lines", ["item_id"], unique=False)
    op.create_index(op.f("ix_rental_lines_order_id"), "rental_lines", ["order_id"], unique=False)
    op.create_table(
        "rental_assets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("line_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("updated_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["rental_items.id"], name=op.f("fk_rental_assets_item_id_rental_items")),
        sa.ForeignKeyConstraint(["line_id"], ["rental_lines.id"], name=op.f("fk_rental_assets_line_id_rental_lines")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rental_assets")),
        sa.UniqueConstraint("tag", name=op.f("uq_rental_assets_tag")),
    )
    op.create_index(op.f("ix_rental_assets_item_id"), "rental_assets", ["item_id"], unique=False)
    op.create_index(op.f("ix_rental_assets_line_id"), "rental_assets", ["line_id"], unique=False)
    op.create_index(op.f("ix_rental_assets_status"), "rental_assets", ["status"], unique=False)
    op.create_table(
        "rental_movements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("overtime_fen", sa.Integer(), nullable=False),
        sa.Column("damage_fen", sa.Integer(), nullable=False),
        sa.Column("loss_fen", sa.Integer(), nullable=False),
        sa.Column("at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["rental_assets.id"], name=op.f("fk_rental_movements_asset_id_rental_assets")
        ),
        sa.ForeignKeyConstraint(
            ["line_id"], ["rental_lines.id"], name=op.f("fk_rental_movements_line_id_rental_lines")
        ),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_rental_movements_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rental_movements")),
    )
    op.create_index(op.f("ix_rental_movements_asset_id"), "rental_movements", ["asset_id"], unique=False)
    op.create_index(op.f("ix_rental_movements_line_id"), "rental_movements", ["line_id"], unique=False)
    op.create_index(op.f("ix_rental_movements_order_id"), "rental_movements", ["order_id"], unique=False)
    op.create_table(
        "rental_orders",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("rent_fen", sa.Integer(), nullable=False),
        sa.Column("deposit_fen", sa.Integer(), nullable=False),
        sa.Column("charges_fen", sa.Integer(), nullable=False),
        sa.Column("deposit_refund_fen", sa.Integer(), nullable=True),
        sa.Column("owed_fen", sa.Integer(), nullable=False),
        sa.Column("refund_id", sa.Integer(), nullable=True),
        sa.Column("created_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_rental_orders_customer_id_customers")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_rental_orders_order_id_orders")),
        sa.ForeignKeyConstraint(["refund_id"], ["refunds.id"], name=op.f("fk_rental_orders_refund_id_refunds")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_rental_orders_site_id_sites")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_rental_orders")),
    )
    op.create_index(op.f("ix_rental_orders_customer_id"), "rental_orders", ["customer_id"], unique=False)
    op.create_index(op.f("ix_rental_orders_phone"), "rental_orders", ["phone"], unique=False)
    op.create_index("ix_rental_orders_site_status", "rental_orders", ["site_id", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rental_orders_site_status", table_name="rental_orders")
    op.drop_index(op.f("ix_rental_orders_phone"), table_name="rental_orders")
    op.drop_index(op.f("ix_rental_orders_customer_id"), table_name="rental_orders")
    op.drop_table("rental_orders")
    op.drop_index(op.f("ix_rental_movements_order_id"), table_name="rental_movements")
    op.drop_index(op.f("ix_rental_movements_line_id"), table_name="rental_movements")
    op.drop_index(op.f("ix_rental_movements_asset_id"), table_name="rental_movements")
    op.drop_table("rental_movements")
    op.drop_index(op.f("ix_rental_assets_status"), table_name="rental_assets")
    op.drop_index(op.f("ix_rental_assets_line_id"), table_name="rental_assets")
    op.drop_index(op.f("ix_rental_assets_item_id"), table_name="rental_assets")
    op.drop_table("rental_assets")
    op.drop_index(op.f("ix_rental_lines_order_id"), table_name="rental_lines")
    op.drop_index(op.f("ix_rental_lines_item_id"), table_name="rental_lines")
    op.drop_index("ix_rental_lines_due_at", table_name="rental_lines")
    op.drop_table("rental_lines")
    op.drop_index(op.f("ix_rental_items_site_id"), table_name="rental_items")
    op.drop_table("rental_items")
