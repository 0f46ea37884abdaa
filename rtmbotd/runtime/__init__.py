"""The plugin runtime: how the user's plugins are loaded, scheduled and run.

- `loader`: a plugin folder's files into a `PluginSet` (module and class plugins)
- `compat`: python-rtmbot 0.4's `Plugin` and `Job`, also reachable as `rtmbot.core`
- `generation`: config + plugin set built beside the running one (reload)
- `host`: `PluginHost`, the running generation's workers, jobs and dispatch
- `worker`: one thread per plugin, so a slow plugin delays only itself
- `scheduler`: `crontable` timing on an injectable monotonic clock (intervals) and wall clock (cron)
- `cron`: cron expressions (cronsim) and time zones (`TIMEZONE`)
"""
