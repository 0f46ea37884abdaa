"""The cluster's clocks, in seconds: one source for every part (coordinator, claims, outbox).

A node heartbeats every HEARTBEAT; one whose heartbeat is older than NODE_TTL by
PostgreSQL's clock is dead; the leader lease lasts LEASE_TTL from its last renewal. A
leader killed or hung is replaced within about LEASE_TTL + HEARTBEAT. A lapsed lease goes
first to the live node that started earliest; a newer node takes it only when no older
one has for LEASE_DEFER (a leader killed and restarted at once must not win it back).
"""
HEARTBEAT = 1.0
NODE_TTL = 6.0
LEASE_TTL = 6.0
LEASE_DEFER = 2 * HEARTBEAT   # s a newer node leaves a lapsed lease to an older live one
CONNECT_TIMEOUT = 3          # s libpq waits for the server (a whole round must fit in a lease)
STATEMENT_TIMEOUT = 3.0      # s a coordination statement may run
NAME_GRACE = 2.0             # s a restart waits for a NODE_NAME whose holder was just killed
