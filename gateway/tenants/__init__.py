"""Brands (tenants): which one a request is for, the tenants file, each brand's Lightning node."""
