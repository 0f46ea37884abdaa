"""Several nodes, one bot: coordination through the shared PostgreSQL store (CLUSTER: true).

`coordinator` (name lock, heartbeat, leader lease, the items it posts to the loop),
`registry` (its SQL), `fencing` (beliefs that lapse on the local clock), `timing` (the
cluster's constants), `cli` (`rtmbotd cluster status`), `ratelimit` (the per-channel send
schedule every node shares), `outbox` (the shared outbox: claims, the fence, takeovers),
`claims` (Socket Mode events taken once cluster-wide by event_id).
Imported only in cluster mode.
"""
