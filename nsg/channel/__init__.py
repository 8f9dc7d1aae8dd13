"""The management channel to the controller: mTLS WebSocket, versioned JSON messages."""
