"""Several nodes, one bot: coordination through the shared PostgreSQL store (CLUSTER: true).

`coordinator` (name lock, heartbeat, leader lease, the items it posts to the loop),
`registry` (its SQL), `fencing` (beliefs that lapse on the local clock), `timing` (the
cluster's constants), `cli` (`rtmbotd cluster status`). Imported only in cluster mode.
"""
