"""Offline kernel selection and device calibration (torch; install the `kernels` extra).

Never imported by the live control loop. See DESIGN.md: verified kernel variants and
calibration micro-benchmarks that feed measured numbers into the optimizer's catalog.
"""
