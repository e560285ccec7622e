"""The admin side: an HTTP API on a private Unix socket, and the CLI that talks to it."""
