"""Reports (报表): sales, refunds, entries, rentals, lessons, cash-up and settlement, as JSON, CSV, XLSX and charts."""
