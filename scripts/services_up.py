"""Exit 0 when the PostgreSQL and Redis named by DATABASE_URL and REDIS_URL answer, else 1."""
import os
import sys

import psycopg
import redis

try:
    dsn = os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        conn.execute("SELECT 1")
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()
except Exception as exc:  # noqa: BLE001
    print(f"services not reachable: {exc}", file=sys.stderr)
    sys.exit(1)
