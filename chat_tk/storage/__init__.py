"""sqlite storage for the server and the client; imports protocol and crypto only."""
