"""The actor runtime's core: node, processes, mailboxes, signals and a virtual clock.

Private: the public surface is `wippy_agents.process`, `wippy_agents.supervisor`
and the names exported from `wippy_agents`.
"""
