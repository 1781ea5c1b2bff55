// The agent has no API: it works from its load-time constructor (see agent.c).
