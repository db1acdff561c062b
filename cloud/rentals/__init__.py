"""Rentals (租赁): items, counted stock and tagged assets, rental orders, hand-out, return and the deposit."""
