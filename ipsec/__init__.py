"""IPsec for nsg: ESP codec and engines, IKEv2. Never imports nsg, controller or lab."""
