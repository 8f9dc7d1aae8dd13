"""Tenant workloads attached to the overlay like any other endpoint: containers (Docker) and VMs (qemu)."""
