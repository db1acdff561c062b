"""passage identity per gate

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00

A passage event is identified by the gate that sent it and its gate-made id: gate_passages' unique
event_id becomes a unique (event_id, gate_id), so another gate's copy of an event id can no longer make
the genuine event a duplicate. Downgrading fails if an event id was stored under two gates.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_gate_passages_event_id"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_gate_passages_event_id_gate_id"), ["event_id", "gate_id"])


def downgrade() -> None:
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_gate_passages_event_id_gate_id"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_gate_passages_event_id"), ["event_id"])
