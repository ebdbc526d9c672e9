"""The weekly and monthly reviews: query performance, security, dependency audit, capacity
planning.
"""
