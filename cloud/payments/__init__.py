"""Payments: a provider interface with the ticket window (`counter`) and WeChat Pay APIv3 (`wechat`)."""
