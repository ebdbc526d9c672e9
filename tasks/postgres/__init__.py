"""PostgreSQL: local clusters (initdb, pg_ctl), SQL and statistics, health checks, restored
clusters beside live, their verification, and switchover.
"""
