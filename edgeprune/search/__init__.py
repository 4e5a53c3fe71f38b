"""``--prune auto``: a budget-driven search over channel allocations, priced by the target's
estimators and anchored on real conversions (``loop.py``)."""
