"""Robot-side runner: drive a robot (or a simulator) from a policy with a safety layer on.

``interface`` (the small ``Robot`` protocol), ``adapters`` (vlastack simulators, LeRobot's
``Robot`` API), ``safety`` (limits and the per-tick filter), ``sources`` (policy server client
with reconnect, chunk timestamps), ``runner`` (the control loop), ``record`` (rollouts as a
LeRobot v3 dataset). Sits above ``serving`` and ``policy``, below ``cli``; nothing below imports it.
"""
