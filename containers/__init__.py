"""Tenant apps (containers, later VMs) attached to the overlay like any other endpoint."""
