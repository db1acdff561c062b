"""Coaches and lessons (教练, 教务): coaches, their availability, lesson products, group classes (拼班), bookings.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cloud.db

revision: str = "0027"
down_revision: str | None = "0026"
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
    with op.batch_alter_table("coaches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coaches_site_id"), ["site_id"], unique=False)

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
    with op.batch_alter_table("lesson_products", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lesson_products_site_id"), ["site_id"], unique=False)

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
    with op.batch_alter_table("coach_availability", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coach_availability_coach_id"), ["coach_id"], unique=False)

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
    with op.batch_alter_table("lesson_classes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lesson_classes_coach_id"), ["coach_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lesson_classes_cutoff_at"), ["cutoff_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_lesson_classes_product_id"), ["product_id"], unique=False)
        batch_op.create_index("ix_lesson_classes_site_start", ["site_id", "start_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_lesson_classes_status"), ["status"], unique=False)

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
    with op.batch_alter_table("lesson_bookings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lesson_bookings_class_id"), ["class_id"], unique=False)
        batch_op.create_index("ix_lesson_bookings_coach_start", ["coach_id", "start_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_lesson_bookings_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_lesson_bookings_site_start", ["site_id", "start_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_lesson_bookings_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lesson_bookings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lesson_bookings_status"))
        batch_op.drop_index("ix_lesson_bookings_site_start")
        batch_op.drop_index(batch_op.f("ix_lesson_bookings_customer_id"))
        batch_op.drop_index("ix_lesson_bookings_coach_start")
        batch_op.drop_index(batch_op.f("ix_lesson_bookings_class_id"))

    op.drop_table("lesson_bookings")
    with op.batch_alter_table("lesson_classes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lesson_classes_status"))
        batch_op.drop_index("ix_lesson_classes_site_start")
        batch_op.drop_index(batch_op.f("ix_lesson_classes_product_id"))
        batch_op.drop_index(batch_op.f("ix_lesson_classes_cutoff_at"))
        batch_op.drop_index(batch_op.f("ix_lesson_classes_coach_id"))

    op.drop_table("lesson_classes")
    with op.batch_alter_table("coach_availability", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coach_availability_coach_id"))

    op.drop_table("coach_availability")
    with op.batch_alter_table("lesson_products", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lesson_products_site_id"))

    op.drop_table("lesson_products")
    with op.batch_alter_table("coaches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coaches_site_id"))

    op.drop_table("coaches")
