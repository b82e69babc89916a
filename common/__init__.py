"""Low-level helpers that edge, gateway, server and firmware_sim share.

Imports nothing of the project's but ``contracts``; imported by every component.
"""
