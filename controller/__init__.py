"""nsg-controller: the reference controller. May import pure modules of nsg (wire formats, models)."""
