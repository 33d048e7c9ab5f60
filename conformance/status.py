"""The closed set of a row's outcomes (benchdnn's model), and the groups of them the rest of the package judges by.

pass         compared, within the threshold            fail     compared, beyond it (or bits that must agree don't)
unsupported  the backend cannot run this case          skip     the target could not run at all (unavailable)
error        the backend raised                        crash    its worker died       timeout  it did not answer
xfail        a failing row a known deviation explains  xpass    a passing row a strict known deviation expected to fail
"""

STATUSES = ("pass", "fail", "unsupported", "skip", "error", "crash", "timeout", "xfail", "xpass")  # report order
FAILING = ("fail", "error", "crash", "timeout")  # what a known deviation turns into xfail
WORKER_LOST = ("crash", "timeout")  # the worker died or was killed: it is started again
UNEXPECTED = (*FAILING, "xpass")  # what makes a run's verdict fail
JUDGED = ("pass", "fail", "xfail", "xpass")  # compared with an expected value
UNCHECKED = ("skip", "unsupported")  # nothing was compared
EXPECTED = ("pass", "xfail", "unsupported", "skip")  # outcomes a run may have without failing its verdict
SEVERITY = ("crash", "timeout", "error", "fail", "xpass", "xfail", "unsupported", "skip", "pass")  # worst first
