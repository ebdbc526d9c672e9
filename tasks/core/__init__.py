"""What every system shares: settings and models, errors, the retry policy, the subprocess runner,
check results, reports and artifacts, events, units.
"""
