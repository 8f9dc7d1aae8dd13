"""Kernel dataplane: pure planners (desired vs actual -> operations) and one netlink adapter."""
