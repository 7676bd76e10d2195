"""The outway: the forward proxy local applications call to reach another peer's Service.

``sluis serve outway``: see :mod:`appliance.outway.app`.
"""
