"""System Maintenance: the nightly backup, the daily health check, the weekly reviews, the
monthly routines.
"""
