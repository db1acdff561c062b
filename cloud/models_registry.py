"""Imports every domain's tables so Alembic and create_all see the whole schema."""

from cloud.audit import models as audit_models
from cloud.channels import models as channel_models
from cloud.customers import models as customer_models
from cloud.db import Base
from cloud.faces import models as face_models
from cloud.lessons import models as lesson_models
from cloud.orders import models as order_models
from cloud.payments import models as payment_models
from cloud.points import models as points_models
from cloud.products import models as product_models
from cloud.refunds import models as refund_models
from cloud.rentals import models as rental_models
from cloud.reports import models as report_models
from cloud.sites import models as site_models
from cloud.staff import models as staff_models
from cloud.sync import models as sync_models
from cloud.tickets import models as ticket_models
from cloud.verify import models as verify_models

__all__ = [
    "Base",
    "audit_models",
    "channel_models",
    "customer_models",
    "face_models",
    "lesson_models",
    "order_models",
    "payment_models",
    "points_models",
    "product_models",
    "refund_models",
    "rental_models",
    "report_models",
    "site_models",
    "staff_models",
    "sync_models",
    "ticket_models",
    "verify_models",
]
