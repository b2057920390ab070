"""Scale-out (DESIGN §12): a primary that owns the database file, and edges without one that
hold the connections, joined by NATS. `single` (the default role) uses none of this."""
