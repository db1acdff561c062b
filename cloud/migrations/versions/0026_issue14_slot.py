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
        "coaches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("disciplines", sa.String(length=32), nullable=False),
        sa.Column("languages", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_coaches_site_id_sites")),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_coaches_staff_id_staff")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coaches")),
        sa.UniqueConstraint("staff_id", name=op.f("uq_coaches_staff_id")),
    )
    op.create_index(op.f("ix_coaches_site_id"), "coaches", ["site_id"], unique=False)
    op.create_table(
        "lesson_products",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("discipline", sa.String(length=16), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("price_weekday_fen", sa.Integer(), nullable=False),
        sa.Column("price_weekend_fen", sa.Integer(), nullable=False),
        sa.Column("price_holiday_fen", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("min_participants", sa.Integer(), nullable=False),
        sa.Column("cutoff_minutes", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_lesson_products_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lesson_products")),
    )
    op.create_index(op.f("ix_lesson_products_site_id"), "lesson_products", ["site_id"], unique=False)
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
        "coach_availability",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("coach_id", sa.Integer(), nullable=False),
        sa.Column("start_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("end_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["coach_id"], ["coaches.id"], name=op.f("fk_coach_availability_coach_id_coaches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coach_availability")),
        sa.UniqueConstraint("coach_id", "start_at", name=op.f("uq_coach_availability_coach_id_start_at")),
    )
    op.create_index(op.f("ix_coach_availability_coach_id"), "coach_availability", ["coach_id"], unique=False)
    op.create_table(
        "lesson_classes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("coach_id", sa.Integer(), nullable=False),
        sa.Column("start_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("end_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("cutoff_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("min_participants", sa.Integer(), nullable=False),
        sa.Column("seats_taken", sa.Integer(), nullable=False),
        sa.Column("price_fen", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["coach_id"], ["coaches.id"], name=op.f("fk_lesson_classes_coach_id_coaches")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["lesson_products.id"], name=op.f("fk_lesson_classes_product_id_lesson_products")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_lesson_classes_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lesson_classes")),
    )
    op.create_index(op.f("ix_lesson_classes_coach_id"), "lesson_classes", ["coach_id"], unique=False)
    op.create_index(op.f("ix_lesson_classes_cutoff_at"), "lesson_classes", ["cutoff_at"], unique=False)
    op.create_index(op.f("ix_lesson_classes_product_id"), "lesson_classes", ["product_id"], unique=False)
    op.create_index("ix_lesson_classes_site_start", "lesson_classes", ["site_id", "start_at"], unique=False)
    op.create_index(op.f("ix_lesson_classes_status"), "lesson_classes", ["status"], unique=False)
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
        "lesson_bookings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("coach_id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=True),
        sa.Column("start_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("end_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("price_fen", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("holder_name", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", cloud.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("checked_in_at", cloud.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("checked_in_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["class_id"], ["lesson_classes.id"], name=op.f("fk_lesson_bookings_class_id_lesson_classes")
        ),
        sa.ForeignKeyConstraint(["coach_id"], ["coaches.id"], name=op.f("fk_lesson_bookings_coach_id_coaches")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_lesson_bookings_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_lesson_bookings_order_id_orders")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["lesson_products.id"], name=op.f("fk_lesson_bookings_product_id_lesson_products")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_lesson_bookings_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lesson_bookings")),
        sa.UniqueConstraint("order_id", name=op.f("uq_lesson_bookings_order_id")),
    )
    op.create_index(op.f("ix_lesson_bookings_class_id"), "lesson_bookings", ["class_id"], unique=False)
    op.create_index("ix_lesson_bookings_coach_start", "lesson_bookings", ["coach_id", "start_at"], unique=False)
    op.create_index(op.f("ix_lesson_bookings_customer_id"), "lesson_bookings", ["customer_id"], unique=False)
    op.create_index("ix_lesson_bookings_site_start", "lesson_bookings", ["site_id", "start_at"], unique=False)
    op.create_index(op.f("ix_lesson_bookings_status"), "lesson_bookings", ["status"], unique=False)
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
    op.drop_index(op.f("ix_lesson_bookings_status"), table_name="lesson_bookings")
    op.drop_index("ix_lesson_bookings_site_start", table_name="lesson_bookings")
    op.drop_index(op.f("ix_lesson_bookings_customer_id"), table_name="lesson_bookings")
    op.drop_index("ix_lesson_bookings_coach_start", table_name="lesson_bookings")
    op.drop_index(op.f("ix_lesson_bookings_class_id"), table_name="lesson_bookings")
    op.drop_table("lesson_bookings")
    op.drop_index(op.f("ix_rental_lines_order_id"), table_name="rental_lines")
    op.drop_index(op.f("ix_rental_lines_item_id"), table_name="rental_lines")
    op.drop_index("ix_rental_lines_due_at", table_name="rental_lines")
    op.drop_table("rental_lines")
    op.drop_index(op.f("ix_lesson_classes_status"), table_name="lesson_classes")
    op.drop_index("ix_lesson_classes_site_start", table_name="lesson_classes")
    op.drop_index(op.f("ix_lesson_classes_product_id"), table_name="lesson_classes")
    op.drop_index(op.f("ix_lesson_classes_cutoff_at"), table_name="lesson_classes")
    op.drop_index(op.f("ix_lesson_classes_coach_id"), table_name="lesson_classes")
    op.drop_table("lesson_classes")
    op.drop_index(op.f("ix_coach_availability_coach_id"), table_name="coach_availability")
    op.drop_table("coach_availability")
    op.drop_index(op.f("ix_rental_items_site_id"), table_name="rental_items")
    op.drop_table("rental_items")
    op.drop_index(op.f("ix_lesson_products_site_id"), table_name="lesson_products")
    op.drop_table("lesson_products")
    op.drop_index(op.f("ix_coaches_site_id"), table_name="coaches")
    op.drop_table("coaches")
