"""The Slack edge: the Web API client and the two websocket link kinds (RTM, Socket Mode)."""
