"""WAN uplinks: static addressing and DHCP (busybox udhcpc as the client)."""
