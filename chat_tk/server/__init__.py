"""The asyncio server: accounts, routing and the durable message queue."""
