"""The node agent: runs assigned replicas as containers on one machine."""
