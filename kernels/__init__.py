"""Offline kernel selection and device calibration (torch; install the `kernels` extra).

Never imported by the live control loop. See DESIGN.md: verified kernel variants and
calibration micro-benchmarks that feed measured numbers into the optimizer's catalog.
`kernels.get(op, device, dtype, shape)` returns the kernel selected for that case (kernels.dispatch).
"""


def get(op: str, device: str, dtype, shape=None):
    """The selected kernel for (op, device, dtype, shape's bucket); see kernels.dispatch.get."""
    from kernels import dispatch  # torch is imported on first use, not by `import kernels`

    return dispatch.get(op, device, dtype, shape)
