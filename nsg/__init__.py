"""nsg: the SD-WAN branch gateway daemon."""

__version__ = "0.1.0"
