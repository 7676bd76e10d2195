"""Sluis: an FSC gateway appliance with the organisation key in an HSM."""
