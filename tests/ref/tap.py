"""tap.py: TAP output for the Python tests (imported, never run).

    from tap import ok, done
    ok(diff < 1e-5, f"logits max diff {diff:.2e}")
    sys.exit(done())
"""
_n = 0
_failed = 0


def ok(cond, what):
    """Print one TAP result line; returns cond."""
    global _n, _failed
    _n += 1
    if not cond:
        _failed += 1
    print(f"{'' if cond else 'not '}ok {_n} - {what}", flush=True)
    return cond


def done():
    """Print the plan; returns the exit status (0 when all passed)."""
    print(f"1..{_n}", flush=True)
    return 1 if _failed else 0
