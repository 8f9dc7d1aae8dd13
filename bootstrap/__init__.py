"""Zero-touch bootstrap (RFC 8572 SZTP, RFC 7030 EST). Never imports nsg, controller or lab."""
