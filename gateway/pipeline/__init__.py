"""Source supervision, normalisation and the detector runner (DESIGN.md section 3).

Everything here works against the interfaces in `gateway.core`, never a concrete driver.
"""
